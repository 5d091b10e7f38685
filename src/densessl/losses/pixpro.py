"""PixPro's pixel-to-propagation consistency (Xie et al., https://arxiv.org/abs/2011.10043)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixpro_loss(pred: torch.Tensor, target: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Minus twice the mean cosine between each propagated pixel and its positive target pixels:
    a scalar in [−2, 2].

    For image b with positive pairs m[b, i, j] ∈ {0, 1}::

        L_b = −2 · Σ_ij m_ij · cos(y_i, x'_j) / (Σ_ij m_ij + 1e-6)
        L   = mean over b of L_b

    so each image weighs the same whatever its number of pairs, and an image with none adds 0
    (the reference's ``regression_loss``). Both inputs are L2-normalised here; no gradient
    reaches ``target``. Computed in float32 at least.

    Args:
        pred: (B, Nq, D) propagated online pixels y.
        target: (B, Nk, D) target projections x' of the other view.
        positives: (B, Nq, Nk) from :func:`densessl.models.pixel_pairs.positive_pairs`.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    y = F.normalize(pred.to(dtype), dim=-1)
    x = F.normalize(target.detach().to(dtype), dim=-1)
    cosine = torch.bmm(y, x.transpose(1, 2))  # (B, Nq, Nk)
    per_image = (cosine * positives).sum(dim=(1, 2)) / (positives.sum(dim=(1, 2)) + 1e-6)
    return -2 * per_image.mean()
