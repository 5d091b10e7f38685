"""DenseCL's correspondence by feature similarity: for each query location, the most similar
key location of the same image. An integer index, so no gradient flows through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def match_by_similarity(q_feat: torch.Tensor, k_feat: torch.Tensor) -> torch.Tensor:
    """For each query location, the key location of the same image with the highest cosine.

    ``index[b, i] = argmax_j cos(q_feat[b, i], k_feat[b, j])``: the direction is query -> key,
    and several query locations may pick the same key location (DenseCL does not require mutual
    nearest neighbours). Ties are broken by ``argmax`` (unspecified). The result is an integer
    index, so no gradient can flow through the matching.

    Args:
        q_feat: (B, Nq, C) query features (any scale; normalised here).
        k_feat: (B, Nk, C) key features (any scale; normalised here).

    Returns:
        (B, Nq) LongTensor of indices into the Nk key locations.

    Example:
        >>> q_feat = torch.randn(2, 49, 2048)
        >>> k_feat = torch.randn(2, 49, 2048)
        >>> match_by_similarity(q_feat, k_feat).shape
        torch.Size([2, 49])
    """
    q_unit = F.normalize(q_feat, dim=2)
    k_unit = F.normalize(k_feat, dim=2)
    similarity = torch.bmm(q_unit, k_unit.transpose(1, 2))  # (B, Nq, Nk)
    return similarity.argmax(dim=2)
