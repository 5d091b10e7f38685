"""Plain-loop float64 reference for BYOL's loss, written from the formula.

Python loops over lists of floats, no torch arithmetic, so it shares no code path with
``densessl.losses``.
"""

from __future__ import annotations

import math

import torch


def plain_byol_loss(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Row by row: ‖p/‖p‖ − z/‖z‖‖², averaged."""
    total = 0.0
    for p, z in zip(pred.tolist(), target.tolist(), strict=True):
        norm_p = math.sqrt(sum(v * v for v in p))
        norm_z = math.sqrt(sum(v * v for v in z))
        total += sum((a / norm_p - b / norm_z) ** 2 for a, b in zip(p, z, strict=True))
    return total / len(pred)
