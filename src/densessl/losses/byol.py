"""BYOL's normalised mean squared error (Grill et al., https://arxiv.org/abs/2006.07733)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised mean squared error, the mean of 2 − 2·cos over the rows::

        loss_i = ‖p̂_i − ẑ_i‖² = 2 − 2·⟨p̂_i, ẑ_i⟩,   p̂ = p/‖p‖, ẑ = z/‖z‖

    No gradient reaches ``target``; float32 at least.

    Args:
        pred: (M, D) online predictions.
        target: (M, D) target projections of the other view (same row order).
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    z = F.normalize(target.detach().to(dtype), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()
