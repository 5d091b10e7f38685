"""DenseCL's correspondence by feature similarity: for each query location, the most similar
key location of the same image. An integer index, so no gradient flows through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def match_by_similarity(q_feat: torch.Tensor, k_feat: torch.Tensor) -> torch.Tensor:
    """``index[b, i] = argmax_j cos(q_feat[b, i], k_feat[b, j])``: query -> key, not mutual
    (DenseCL), ties broken by ``argmax``: (B, Nq) LongTensor of indices into the Nk key
    locations of ``q_feat`` (B, Nq, C) and ``k_feat`` (B, Nk, C), any scale (normalised here).
    """
    q_unit = F.normalize(q_feat, dim=2)
    k_unit = F.normalize(k_feat, dim=2)
    similarity = torch.bmm(q_unit, k_unit.transpose(1, 2))  # (B, Nq, Nk)
    return similarity.argmax(dim=2)
