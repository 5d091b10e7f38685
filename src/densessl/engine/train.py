"""The training loop: one code path for CPU and GPU, one process or many under torchrun."""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from densessl import dist
from densessl.engine.logging import log
from densessl.engine.session import Session, open_session
from densessl.engine.step import step_state, train_step
from densessl.methods import StepState


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final_loss: float
    skipped_files: list[str]


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # preemption: checkpoint like Ctrl-C


def train(cfg: DictConfig, resume: bool = False) -> RunResult:
    """Run (or continue) the pretraining described by ``cfg``; returns where it went."""
    s = open_session(cfg, resume)
    steps = s.run.total_steps
    previous_handler = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    step, loss, last, started = s.start_step, math.nan, None, time.perf_counter()
    try:
        for step in range(s.start_step, steps):
            state = step_state(step, s.schedules, s.run)
            loss, logs = train_step(s, state)
            _log_step(s, state, loss, logs)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                s.save(step + 1)
        step = steps
        last = s.save(steps)
    except KeyboardInterrupt:
        s.method.after_step_aborted()
        s.optimizer.zero_grad(set_to_none=True)
        path = s.save(step)
        log.warning(
            "interrupted at step %d; state saved to %s (continue with --resume)", step, path
        )
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        s.close()
    return _finish(s, loss, last, time.perf_counter() - started)


def _log_step(s: Session, state: StepState, loss: float, logs: dict) -> None:
    """A metrics record every ``log_every`` steps (and at the first and last); the bar always."""
    s.throughput.add(s.cfg.batch_size)
    done = state.step + 1
    if done % s.cfg.log_every == 0 or done == s.run.total_steps or state.step == s.start_step:
        rate = s.throughput.rate()
        record = {
            "step": done,
            "epoch": done / s.run.steps_per_epoch,
            "loss": loss,
            "lr": state.lr,
            "images_per_sec": rate,
        }
        if s.cfg.optim.weight_decay_end is not None:
            record["weight_decay"] = state.weight_decay
        record.update({k: dist.all_reduce_mean(v).item() for k, v in logs.items()})
        s.metrics.write(record)
        s.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}", refresh=False)
    s.bar.update(1)


def _finish(s: Session, loss: float, last: Path | None, elapsed: float) -> RunResult:
    """Write summary.json and say where everything went."""
    steps, cfg = s.run.total_steps, s.cfg
    skipped = sorted({p for part in dist.all_gather_objects(sorted(s.skipped)) for p in part})
    summary = {
        "method": cfg.method.name,
        "steps": steps,
        "steps_this_run": steps - s.start_step,
        "seconds": round(elapsed, 2),
        "images_per_sec": round((steps - s.start_step) * cfg.batch_size / max(elapsed, 1e-9), 2),
        "final_loss": loss,
        "skipped_files": len(skipped),
        "skipped_paths": skipped,
        "checkpoint": str(last) if last else None,
    }
    if dist.is_main():
        (s.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info(
            "done: %d steps in %.1f s (%.1f images/s), final loss %.4f, checkpoint %s",
            steps, elapsed, summary["images_per_sec"], loss, last,
        )  # fmt: skip
        if skipped:
            log.warning(
                "skipped %d unreadable file(s); list in %s",
                len(skipped),
                s.run_dir / "summary.json",
            )
    return RunResult(s.run_dir, steps, loss, skipped)
