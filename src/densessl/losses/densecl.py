"""DenseCL's dense term (Wang et al., https://arxiv.org/abs/2011.09157): InfoNCE per location,
the positive key found by backbone-feature matching (:mod:`densessl.models.matching`).
"""

from __future__ import annotations

import torch

from densessl.losses.moco import info_nce
from densessl.models.matching import match_by_similarity


def densecl_dense_loss(
    q_dense: torch.Tensor,
    k_dense: torch.Tensor,
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
) -> torch.Tensor:
    """DenseCL's dense term: InfoNCE per query location, positive found by feature matching.

    With j*(b, i) = ``match_by_similarity(q_feat, k_feat)[b, i]``::

        loss = 1/(B·N) Σ_b Σ_i -log( exp(r·t₊/t) / (exp(r·t₊/t) + Σ_j exp(r·n_j/t)) ),
        r = q_dense[b, i],  t₊ = k_dense[b, j*(b, i)],  n_j = negatives[j]

    Gradient flows only to ``q_dense`` (``k_dense`` is detached, the match is an index).

    Args:
        q_dense: (B, N, D) query dense projections, L2-normalised per location.
        k_dense: (B, Nk, D) key dense projections, L2-normalised per location.
        q_feat: (B, N, C) query backbone features (raw; normalised inside, for matching only).
        k_feat: (B, Nk, C) key backbone features, likewise.
        negatives: (K, D) negatives, L2-normalised (DenseCL's dense queue of pooled key vectors).
    """
    batch, locations, dim = q_dense.shape
    index = match_by_similarity(q_feat.detach(), k_feat.detach())  # (B, N)
    gather_index = index.unsqueeze(2).expand(batch, locations, dim)  # (B, N, D)
    matched_keys = torch.gather(k_dense.detach(), 1, gather_index)  # (B, N, D)
    return info_nce(
        q_dense.reshape(batch * locations, dim),
        matched_keys.reshape(batch * locations, dim),
        negatives,
        temperature,
    )
