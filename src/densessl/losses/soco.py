"""SoCo's object-level loss (Wei et al., https://arxiv.org/abs/2106.02637): BYOL's cosine over
pairs of box slots that hold the same proposal.
"""

from __future__ import annotations

import torch

from densessl.losses.pixpro import pixpro_loss


def box_pair_loss(
    pred: torch.Tensor, target: torch.Tensor, pred_ids: torch.Tensor, target_ids: torch.Tensor
) -> torch.Tensor:
    """SoCo's object-level loss, a scalar in [−2, 2]: −2 × the mean cosine over matched boxes,
    averaged per image.

    With C[n, i, j] = ``pred_ids[n, i] == target_ids[n, j]`` (padding duplicates, so a slot can
    match several)::

        loss = −2 · 1/N Σ_n [ Σ_ij C[n,i,j]·⟨p̂_ni, ẑ_nj⟩ / (Σ_ij C[n,i,j] + 1e−6) ]

    the reference's ``regression_loss_bboxs_aware`` on each box's assigned level.

    Args:
        pred: (N, K, D) online predictions of the K box slots of each image.
        target: (N, K, D) target projections of the other view's K slots (no gradient).
        pred_ids: (N, K) integer proposal id of every prediction slot; ``target_ids`` likewise.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    matches = (pred_ids[:, :, None] == target_ids[:, None, :]).to(dtype)  # (N, K, K)
    return pixpro_loss(pred, target, matches)  # the same pair-averaged cosine
