"""The training loop: one code path for CPU and GPU, one process or many under torchrun."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from densessl import dist
from densessl.engine.checkpoint import atomic_write
from densessl.engine.health_check import measure
from densessl.engine.interrupts import StopRequests
from densessl.engine.logging import log
from densessl.engine.session import Session, open_session
from densessl.engine.step import step_state, train_step
from densessl.errors import StorageError
from densessl.health import MEASURES, collapse_signs
from densessl.methods import StepState
from densessl.runs import LAST_CHECKPOINT, METRICS_NAME, parse_metrics


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    skipped_files: list[str]


def train(cfg: DictConfig, resume: bool = False) -> RunResult:
    """Run (or continue) the pretraining described by ``cfg``; returns where it went.

    The run folder stays locked from the first write to the summary; a run resumed at its last
    step rewrites only the summary. Ctrl-C or SIGTERM ends it at a step boundary with its state
    saved, raising KeyboardInterrupt. StorageError if a write fails (a full disk); the last
    checkpoint is intact.
    """
    s = open_session(cfg, resume)
    try:
        return _run(s)
    finally:
        s.release()


def _run(s: Session) -> RunResult:
    steps = s.run.total_steps
    step, loss, started, stopping = s.start_step, math.nan, time.perf_counter(), False
    try:
        with StopRequests() as stop:
            while step < steps and not stopping:
                state = step_state(step, s.schedules, s.run)
                loss, logs = train_step(s, state)
                _log_step(s, state, loss, logs)
                step += 1
                periodic = step < steps and step % s.cfg.checkpoint_every == 0
                if periodic:
                    s.save(step)
                stopping = dist.any_rank(stop.requested, s.device)
                if stopping and step < steps and not periodic:
                    s.save(step)
            last = s.save(steps) if step == steps else None  # None on other ranks too
    except KeyboardInterrupt:  # a second signal: the step under way is dropped
        _stopped(s, f"stopped at once during step {step}; {s.intact()}")
    except OSError as err:  # a write of the loop (metrics ...) failed; checkpoints are atomic
        raise StorageError(f"could not write {err.filename or s.run_dir}: "
                           f"{err.strerror or err}; {s.intact()}") from err  # fmt: skip
    finally:
        s.close()
    if step < steps:
        _stopped(s, f"interrupted at step {step}; state saved to "
                    f"{s.run_dir / LAST_CHECKPOINT} (continue with --resume)")  # fmt: skip
    return _finish(s, loss, last, time.perf_counter() - started)


def _stopped(s: Session, line: str) -> None:
    """End the run after an interrupt with one line (exit code 130 at the command line)."""
    if dist.is_main():
        log.warning("%s", line)
    raise KeyboardInterrupt


def _log_step(s: Session, state: StepState, loss: float, logs: dict) -> None:
    """A metrics record every ``log_every`` steps (and at the first and last) and at every
    health check; the bar always."""
    s.throughput.add(s.cfg.batch_size)
    done = state.step + 1
    check = s.health_every > 0 and (done % s.health_every == 0 or done == s.run.total_steps)
    health = _health(s, state, done) if check else {}
    logged = done % s.cfg.log_every == 0 or done == s.run.total_steps
    # The same decision in every process: a record's terms are averaged over all of them.
    if logged or state.step == s.start_step or check:
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
        s.metrics.write({**record, **health})
        s.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}", refresh=False)
    s.bar.update(1)


def _health(s: Session, state: StepState, done: int) -> dict[str, float]:
    """The health measures at a check step (the main process; {} in the others), with one
    warning line when a collapse sign appears."""
    if s.held is None:
        return {}
    values = measure(s.method, s.held, state)
    signs = collapse_signs(values)
    if signs.keys() - s.health_signs.keys():  # a measure crossed its threshold at this check
        log.warning("step %d: the run looks collapsed: %s (densessl health %s)",
                    done, "; ".join(signs.values()), s.run_dir)  # fmt: skip
    s.health_signs, s.health_values = signs, values
    return values


def _last_logged_loss(run_dir: Path) -> float | None:
    """The loss of the last record in metrics.jsonl (a finished run resumed trains no step)."""
    path = run_dir / METRICS_NAME
    records = parse_metrics(path.read_text(), path) if path.exists() else []
    return records[-1].get("loss") if records else None


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a value that is not a finite number is written as null."""
    return value if value is not None and math.isfinite(value) else None


def _finish(s: Session, loss: float, last: Path | None, elapsed: float) -> RunResult:
    """Write summary.json (strict JSON) and say where everything went and what to run next."""
    steps, cfg = s.run.total_steps, s.cfg
    skipped = sorted({p for part in dist.all_gather_objects(sorted(s.skipped)) for p in part})
    trained = steps - s.start_step
    if not trained and dist.is_main():
        loss = _last_logged_loss(s.run_dir)
        log.info("%s was already at step %d: nothing to train (ask for more --steps)",
                 s.run_dir, steps)  # fmt: skip
    summary = {
        "method": cfg.method.name,
        "steps": steps,
        "steps_this_run": trained,
        "seconds": round(elapsed, 2),
        "images_per_sec": round(trained * cfg.batch_size / max(elapsed, 1e-9), 2),
        "final_loss": _finite_or_none(loss),
        "skipped_files": len(skipped),
        "skipped_paths": skipped,
        "checkpoint": str(last) if last else None,
    }
    if s.health_values:
        summary["health"] = {k: round(v, 4) for k, v in s.health_values.items()}
    if dist.is_main():
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
        atomic_write(s.run_dir / "summary.json", lambda f: f.write(text.encode()))
        log.info(
            "done: %d steps in %.1f s (%.1f images/s), final loss %s, checkpoint %s",
            steps, elapsed, summary["images_per_sec"],
            "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}", last,
        )  # fmt: skip
        if s.health_values:
            measures = ", ".join(f"{MEASURES[k]} {v:.3f}" for k, v in s.health_values.items())
            verdict = f"collapsing (densessl health {s.run_dir})" if s.health_signs else "healthy"
            log.info("health at the end: %s: %s", measures, verdict)
        if skipped:
            log.warning(
                "skipped %d unreadable file(s); list in %s",
                len(skipped),
                s.run_dir / "summary.json",
            )
        log.info("%s", next_commands(s.run_dir))
    return RunResult(s.run_dir, steps, summary["final_loss"], skipped)


def next_commands(run_dir: Path) -> str:
    """The commands that usually follow a finished run, ready to paste."""
    return (
        f"next: densessl eval linear-seg --weights {run_dir}  |  densessl export {run_dir} "
        f"--format torchvision --out {run_dir / 'backbone.pt'}"
    )
