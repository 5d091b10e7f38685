"""One optimizer step: evaluate the schedules, forward/backward every micro-batch, update."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import torch
from torch.nn.parallel import DistributedDataParallel

from densessl import dist
from densessl.data.batch_augment import augment_batch
from densessl.engine.fast_path import batch_in_memory_format
from densessl.engine.optim import clip_each_parameter_
from densessl.engine.session import Session
from densessl.errors import TrainingDiverged, UserError, unwrapped
from densessl.methods import StepState
from densessl.schedules import RunLength, Schedule


def step_state(step: int, schedules: dict[str, Schedule], run: RunLength) -> StepState:
    """Every declared schedule evaluated at ``step``."""
    return StepState(step, {name: schedule.at(step, run) for name, schedule in schedules.items()})


def bare_step(
    method: torch.nn.Module, batch, state: StepState, optimizer: torch.optim.Optimizer
) -> torch.Tensor:
    """One plain step (forward, backward, frozen gradients dropped, optimizer step,
    ``after_step``) without accumulation, clipping, loss scaling, DDP or divergence checks, for
    benchmarks and tests; returns the detached loss."""
    out = method(batch, state)
    out.loss.backward()
    for p in method.frozen_parameters(state):
        p.grad = None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    method.after_step(state)
    return out.loss.detach()


def train_step(s: Session, state: StepState) -> tuple[float, dict[str, torch.Tensor]]:
    """Run one optimizer step; returns its loss (mean over processes) and its logged terms.
    TrainingDiverged if the loss is not finite, after saving the state before the step."""
    for group in s.optimizer.param_groups:
        group["lr"] = state.lr
        if group["apply_decay"]:
            group["weight_decay"] = state.weight_decay
    loss, logs = _accumulate(s, state)
    loss_value = dist.all_reduce_mean(loss).item()
    if not math.isfinite(loss_value):
        _diverged(s, state.step, loss_value, logs)
    optim = s.cfg.optim
    if optim.clip_grad > 0:
        s.scaler.unscale_(s.optimizer)
        if optim.clip_mode == "per_param":
            clip_each_parameter_(s.method.parameters(), optim.clip_grad)
        else:
            torch.nn.utils.clip_grad_norm_(s.method.parameters(), optim.clip_grad)
    for p in s.method.frozen_parameters(state):
        p.grad = None
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    s.method.after_step(state)
    return loss_value, logs


def _accumulate(s: Session, state: StepState) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward/backward ``accum_steps`` micro-batches; returns the step's mean loss and terms."""
    accum = s.cfg.accum_steps
    total = torch.zeros((), device=s.device, dtype=s.view_dtype)
    logs: dict[str, torch.Tensor] = {}
    for micro in range(accum):
        try:
            batch = next(s.batches)
        except UserError as err:  # raised in a loader worker: its own line, not the traceback
            raise unwrapped(err) from None
        s.skipped.update(batch.skipped)
        batch = augment_batch(batch.to(s.device, non_blocking=True))
        batch = batch_in_memory_format(batch, s.memory_format)
        if s.view_dtype != torch.float32:  # fp64 weights take float64 views
            batch = replace(batch, views=[v.to(s.view_dtype) for v in batch.views])
        sync = contextlib.nullcontext()
        if isinstance(s.model, DistributedDataParallel) and micro < accum - 1:
            sync = s.model.no_sync()  # all-reduce gradients once, on the last micro-batch
        autocast = contextlib.nullcontext()
        if s.autocast_dtype is not None:
            autocast = torch.autocast(s.device.type, dtype=s.autocast_dtype)
        with sync:
            with autocast:
                out = s.model(batch, state)
            s.scaler.scale(out.loss / accum).backward()
        total += out.loss.detach() / accum
        for k, v in out.logs.items():
            logs[k] = logs.get(k, 0) + v.detach() / accum
    return total, logs


def _diverged(s: Session, step: int, loss_value: float, logs: dict[str, torch.Tensor]) -> None:
    """Drop the bad step, save the state before it and stop with what to try next."""
    s.optimizer.zero_grad(set_to_none=True)
    s.method.after_step_aborted()
    path = s.save(step)
    terms = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
    raise TrainingDiverged(
        f"loss became {loss_value} at step {step} ({terms}). The state before this "
        f"step is saved in {path or s.run_dir / 'checkpoints/last.pt'}; resume with "
        "--resume and a lower optim.base_lr, optim.clip_grad=1.0 or precision=fp32."
    )
