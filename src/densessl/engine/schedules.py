"""Schedules as pure functions of the optimizer step (no hooks mutating attributes)."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, base: float, final: float = 0.0, warmup_steps: int = 0
) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_steps``, then cosine from ``base`` to
    ``final`` at ``total_steps``. ``step`` counts from 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weight_decay(step: int, total_steps: int, start: float, end: float | None) -> float:
    """DINO's weight-decay schedule: cosine from ``start`` to ``end`` over the whole run, no
    warm-up; constant ``start`` when ``end`` is None."""
    return start if end is None else warmup_cosine(step, total_steps, start, end)


def learning_rate(
    step: int,
    total_steps: int,
    peak_lr: float,
    schedule: str,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> float:
    if schedule == "constant":
        return peak_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else peak_lr
    if schedule == "cosine":
        return warmup_cosine(step, total_steps, peak_lr, min_lr, warmup_steps)
    raise ValueError(f"unknown schedule {schedule!r}")
