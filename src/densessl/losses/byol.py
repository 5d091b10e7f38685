"""BYOL's normalised mean squared error (Grill et al., https://arxiv.org/abs/2006.07733)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised mean squared error, the mean of 2 − 2·cos over the rows.

    For each row i, with p̂ = p/‖p‖ and ẑ = z/‖z‖::

        loss_i = ‖p̂_i − ẑ_i‖² = 2 − 2·⟨p̂_i, ẑ_i⟩

    Both inputs are L2-normalised here; no gradient reaches ``target``. Computed in float32 at
    least.

    Args:
        pred: (M, D) online predictions.
        target: (M, D) target projections of the other view (same row order).

    Returns:
        Scalar tensor: the mean of loss_i over the M rows, in [0, 4].

    Example:
        >>> p, z = torch.randn(8, 256), torch.randn(8, 256)
        >>> loss = byol_loss(p, z) + byol_loss(z, p)  # BYOL's symmetric loss, roles swapped
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    z = F.normalize(target.detach().to(dtype), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()
