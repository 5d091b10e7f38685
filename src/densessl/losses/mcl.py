"""MCL's montage-cell loss (Guo et al., https://arxiv.org/abs/2304.02010): each montage cell must
pick its source image's full-view target among all targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mcl_cell_loss(
    pred: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """MCL's loss for one level and branch (the reference's ``LatentMultiPredictContrastHead``)::

        loss_c = −log( exp(⟨p̂_c, z_{y_c}⟩/T) / Σ_m exp(⟨p̂_c, z_m⟩/T) ),  p̂_c = p_c/‖p_c‖
        loss   = 2T · mean_c loss_c

    scaled by 2T so that at T = 1 the positive term is BYOL's −2·cos; float32 at least.

    Args:
        pred: (n, D) online predictions of n cells (normalised here).
        targets: (N, D) L2-normalised full-view targets of the other branch, gathered from every
            process; no gradient.
        labels: (n,) long, index into ``targets`` of each cell's source image.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    logits = p @ targets.detach().to(dtype).t() / temperature  # (n, N)
    return F.cross_entropy(logits, labels) * (2 * temperature)
