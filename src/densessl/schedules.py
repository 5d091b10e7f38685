"""Schedules: every time-dependent value as a pure function of the optimizer step.

Methods declare theirs (teacher momentum, temperature, dense-loss weight, last-layer freeze), the
engine lr and weight decay; the engine alone evaluates them once per optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RunLength:
    """What turns epochs into steps: the run's optimizer steps and steps per pass over the data."""

    total_steps: int
    steps_per_epoch: int

    def steps(self, epochs: float) -> int:
        return round(epochs * self.steps_per_epoch)


def warmup_cosine(
    step: int, total_steps: int, base: float, final: float = 0.0, warmup_steps: int = 0
) -> float:
    """Linear warm-up from base/warmup_steps to ``base`` over ``warmup_steps``, then cosine from
    ``base`` to ``final`` at ``total_steps``. ``step`` counts from 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """A value as a function of the optimizer step, given the run's length."""

    def at(self, step: int, run: RunLength) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    value: float

    def at(self, step: int, run: RunLength) -> float:
        return self.value


@dataclass(frozen=True)
class Cosine(Schedule):
    """``start`` -> ``end`` by a half cosine over the run after an optional linear warm-up (in
    steps, or epochs when ``warmup_steps`` is 0); ``ahead`` reads the curve that many steps later
    (BYOL's τ(k + 1))."""

    start: float
    end: float
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    ahead: int = 0

    def at(self, step: int, run: RunLength) -> float:
        warmup = self.warmup_steps or run.steps(self.warmup_epochs)
        return warmup_cosine(step + self.ahead, run.total_steps, self.start, self.end, warmup)


@dataclass(frozen=True)
class CosineTimesWarmup(Schedule):
    """mmcv's ``CosineAnnealing`` lr with a linear warm-up (OpenSelfSup, MCL)::

        cos(k) = end + (start − end)·(1 + cos(π·k/K))/2
        value(k) = cos(k) · (1 − (1 − k/W)·(1 − warmup_ratio))    for k < W, else cos(k)

    Unlike :class:`Cosine`, the cosine runs over all K steps, so the peak is cos(W) < start."""

    start: float
    end: float
    warmup_steps: int = 0
    warmup_ratio: float = 0.0

    def at(self, step: int, run: RunLength) -> float:
        progress = min(1.0, step / max(1, run.total_steps))
        value = self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            value *= 1.0 - (1.0 - step / self.warmup_steps) * (1.0 - self.warmup_ratio)
        return value


@dataclass(frozen=True)
class WarmupConstant(Schedule):
    """Linear warm-up to ``value`` over ``warmup_steps`` (from value/warmup_steps), then
    constant: the ``constant`` lr schedule."""

    value: float
    warmup_steps: int = 0

    def at(self, step: int, run: RunLength) -> float:
        if not self.warmup_steps:
            return self.value
        return self.value * min(1.0, (step + 1) / self.warmup_steps)


@dataclass(frozen=True)
class LinearThenConstant(Schedule):
    """Linear from ``start`` at step 0 towards ``end``, reached after ``epochs``; then
    ``end`` (DINO's teacher-temperature warm-up)."""

    start: float
    end: float
    epochs: float

    def at(self, step: int, run: RunLength) -> float:
        span = run.steps(self.epochs)
        if step >= span:
            return self.end
        return self.start + (self.end - self.start) * step / span


@dataclass(frozen=True)
class Switch(Schedule):
    """``before`` until a step (given in steps, or in epochs when ``at_steps`` is 0), then
    ``after``: DenseCL's dense-loss warm-up, DINO's last-layer freeze."""

    before: float
    after: float
    at_steps: int = 0
    at_epochs: float = 0.0

    def at(self, step: int, run: RunLength) -> float:
        switch = self.at_steps or run.steps(self.at_epochs)
        return self.before if step < switch else self.after


def cosine_to_one(base: float, step: int, total_steps: int) -> float:
    """BYOL's τ(k) = 1 − (1 − base)·(cos(π·k/K) + 1)/2 written out, k capped at K."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1) / 2


def byol_momentum(base: float) -> Cosine:
    """τ: 1 − (1 − base)·(cos(π·k/K) + 1)/2, from ``base`` to 1, read at k + 1 (the update
    after step k prepares step k + 1's target)."""
    return Cosine(base, 1.0, ahead=1)
