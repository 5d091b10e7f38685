"""The precision objectives compute in: float32 at least, float64 when the network runs in it."""

from __future__ import annotations

import torch


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 (from bf16 / fp16 autocast outputs), or unchanged when it is already
    float32 or float64: losses and matching read activations at this precision, and a float64
    run (``precision: fp64``, the golden record's) must stay float64 throughout."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
