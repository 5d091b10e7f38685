"""The training loop: one code path for CPU and GPU, one process or many under torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from densessl import dist
from densessl.config import save_config
from densessl.engine import checkpoint as ckpt
from densessl.engine.logging import MetricsWriter, Progress, Throughput, log, setup_console_logging
from densessl.engine.optim import build_optimizer, clip_each_parameter_
from densessl.engine.schedules import learning_rate, weight_decay
from densessl.engine.setup import (
    augment_batch,
    build_loader,
    build_method,
    build_source,
    resolve_device,
    resolve_precision,
    steps_per_epoch,
    total_steps,
)
from densessl.errors import TrainingDiverged
from densessl.methods import Method
from densessl.models.norm import convert_batchnorm


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
    device = resolve_device(cfg)
    dist.init(device.type)
    setup_console_logging(dist.is_main())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out)
    state = _load_resume_state(run_dir) if resume else None

    source = build_source(cfg)
    steps = total_steps(cfg, len(source))
    warmup = cfg.optim.warmup_steps or round(
        cfg.optim.warmup_epochs * steps_per_epoch(cfg, len(source))
    )
    peak_lr = cfg.optim.base_lr * cfg.batch_size / 256  # linear scaling rule
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    method = build_method(cfg, steps, steps_per_epoch(cfg, len(source)))
    if cfg.batch_norm == "sync" and dist.world_size() > 1:
        method = convert_batchnorm(method, "torch_sync" if device.type == "cuda" else "sync")
    method.to(device)
    optimizer = build_optimizer(method.named_parameters(), cfg.optim)
    autocast_dtype = resolve_precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    start_step, skipped = 0, set()
    if state is not None:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler.is_enabled() and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        start_step, skipped = int(state["step"]), set(state["skipped_files"])
        log.info("resumed %s at step %d", run_dir, start_step)
    if dist.is_main():
        save_config(cfg, run_dir / "config.yaml")
    log.info(
        "%s on %s: %s, %d process(es), %d images, %d steps, batch %d, lr %.4g (base %.4g)",
        cfg.method.name,
        device,
        cfg.backbone,
        dist.world_size(),
        len(source),
        steps,
        cfg.batch_size,
        peak_lr,
        cfg.optim.base_lr,
    )

    model: torch.nn.Module = method
    if dist.world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        # Queues are buffers: broadcasting them every step would cost far more than the step.
        model = DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)
    loader = build_loader(cfg, source, method, device, start_step * cfg.accum_steps)
    batches = iter(loader)

    def save(step: int) -> Path | None:
        if not dist.is_main():
            return None
        payload = {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "data_position": {"micro_batches": step * cfg.accum_steps},
            "skipped_files": sorted(skipped),
        }
        return ckpt.save_training_state(run_dir, step, payload, cfg.keep_checkpoints)

    metrics = MetricsWriter(run_dir, start_step, enabled=dist.is_main())
    progress = Progress(steps, start_step, enabled=dist.is_main())
    throughput = Throughput()
    previous_handler = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    step, loss_value, started = start_step, float("nan"), time.perf_counter()
    try:
        for step in range(start_step, steps):
            lr = learning_rate(step, steps, peak_lr, cfg.optim.schedule, warmup, cfg.optim.min_lr)
            wd = weight_decay(step, steps, cfg.optim.weight_decay, cfg.optim.weight_decay_end)
            for group in optimizer.param_groups:
                group["lr"] = lr
                if group["apply_decay"]:
                    group["weight_decay"] = wd
            loss, logs = _accumulate(
                model, method, batches, step, cfg, device, autocast_dtype, scaler, skipped
            )
            loss_value = dist.all_reduce_mean(loss).item()
            if not math.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                method.after_step_aborted()
                path = save(step)
                terms = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
                raise TrainingDiverged(
                    f"loss became {loss_value} at step {step} ({terms}). The state before this "
                    f"step is saved in {path or run_dir / 'checkpoints/last.pt'}; resume with "
                    "--resume and a lower optim.base_lr, optim.clip_grad=1.0 or precision=fp32."
                )
            if cfg.optim.clip_grad > 0:
                scaler.unscale_(optimizer)
                if cfg.optim.clip_mode == "per_param":
                    clip_each_parameter_(method.parameters(), cfg.optim.clip_grad)
                else:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.optim.clip_grad)
            for p in method.frozen_parameters(step):
                p.grad = None
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            method.after_step(step)

            throughput.add(cfg.batch_size)
            done = step + 1
            if done % cfg.log_every == 0 or done == steps or step == start_step:
                rate = throughput.rate()
                record = {
                    "step": done,
                    "epoch": done / steps_per_epoch(cfg, len(source)),
                    "loss": loss_value,
                    "lr": lr,
                    "images_per_sec": rate,
                }
                if cfg.optim.weight_decay_end is not None:
                    record["weight_decay"] = wd
                record.update({k: dist.all_reduce_mean(v).item() for k, v in logs.items()})
                metrics.write(record)
                progress.bar.set_postfix(
                    loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}", refresh=False
                )
            progress.bar.update(1)
            if done % cfg.checkpoint_every == 0 and done < steps:
                save(done)
        step = steps
        last = save(steps)
    except KeyboardInterrupt:
        method.after_step_aborted()
        optimizer.zero_grad(set_to_none=True)
        path = save(step)
        log.warning(
            "interrupted at step %d; state saved to %s (continue with --resume)", step, path
        )
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        progress.close()
        metrics.close()

    all_skipped = sorted({p for part in dist.all_gather_objects(sorted(skipped)) for p in part})
    elapsed = time.perf_counter() - started
    summary = {
        "method": cfg.method.name,
        "steps": steps,
        "steps_this_run": steps - start_step,
        "seconds": round(elapsed, 2),
        "images_per_sec": round((steps - start_step) * cfg.batch_size / max(elapsed, 1e-9), 2),
        "final_loss": loss_value,
        "skipped_files": len(all_skipped),
        "skipped_paths": all_skipped,
        "checkpoint": str(last) if last else None,
    }
    if dist.is_main():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info(
            "done: %d steps in %.1f s (%.1f images/s), final loss %.4f, checkpoint %s",
            steps,
            elapsed,
            summary["images_per_sec"],
            loss_value,
            last,
        )
        if all_skipped:
            log.warning(
                "skipped %d unreadable file(s); list in %s",
                len(all_skipped),
                run_dir / "summary.json",
            )
    return RunResult(run_dir, steps, loss_value, all_skipped)


def _accumulate(
    model, method: Method, batches, step, cfg, device, autocast_dtype, scaler, skipped: set[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward/backward ``accum_steps`` micro-batches; returns the step's mean loss and terms."""
    total = torch.zeros((), device=device)
    logs: dict[str, torch.Tensor] = {}
    for micro in range(cfg.accum_steps):
        batch = next(batches)
        skipped.update(batch.skipped)
        batch = augment_batch(batch.to(device, non_blocking=True))
        last_micro = micro == cfg.accum_steps - 1
        sync = contextlib.nullcontext()
        if isinstance(model, DistributedDataParallel) and not last_micro:
            sync = model.no_sync()  # all-reduce gradients once, on the last micro-batch
        autocast = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with sync:
            with autocast:
                out = model(batch, step)
            scaler.scale(out.loss / cfg.accum_steps).backward()
        total += out.loss.detach() / cfg.accum_steps
        for k, v in out.logs.items():
            logs[k] = logs.get(k, 0) + v.detach() / cfg.accum_steps
    return total, logs


def _load_resume_state(run_dir: Path) -> dict:
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    return ckpt.load_checkpoint(path)
