"""Plain-loop float64 references for the losses, written from the paper formulas.

Deliberately naive: Python loops over rows and locations, explicit exp/log sums, no
cross-entropy helper, no batched matmul, so they share no code path with ``densessl.losses``.
Inputs are torch tensors (any dtype); everything is converted to Python floats.
"""

from __future__ import annotations

import math

import torch


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(a: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in a))
    return [x / norm for x in a]


def plain_info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> float:
    """mean_i -log( exp(q_i·k_i/t) / (exp(q_i·k_i/t) + Σ_j exp(q_i·n_j/t)) )."""
    qs, ks, ns = q.tolist(), k.tolist(), negatives.tolist()
    total = 0.0
    for q_row, k_row in zip(qs, ks, strict=True):
        positive = math.exp(_dot(q_row, k_row) / temperature)
        negative_sum = sum(math.exp(_dot(q_row, n_row) / temperature) for n_row in ns)
        total += -math.log(positive / (positive + negative_sum))
    return total / len(qs)


def plain_match(q_feat: torch.Tensor, k_feat: torch.Tensor) -> list[list[int]]:
    """index[b][i] = argmax_j cos(q_feat[b, i], k_feat[b, j]), by explicit loops."""
    result = []
    for q_image, k_image in zip(q_feat.tolist(), k_feat.tolist(), strict=True):
        k_units = [_unit(v) for v in k_image]
        row = []
        for q_vec in q_image:
            q_unit = _unit(q_vec)
            best_j, best_cos = 0, -math.inf
            for j, k_unit in enumerate(k_units):
                cos = _dot(q_unit, k_unit)
                if cos > best_cos:
                    best_j, best_cos = j, cos
            row.append(best_j)
        result.append(row)
    return result


def plain_densecl_dense_loss(
    q_dense: torch.Tensor,
    k_dense: torch.Tensor,
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
) -> float:
    """Mean over all images b and query locations i of the InfoNCE with positive
    k_dense[b, j*(b, i)], j* from :func:`plain_match`, and the given negatives."""
    matches = plain_match(q_feat, k_feat)
    qs, ks, ns = q_dense.tolist(), k_dense.tolist(), negatives.tolist()
    total, rows = 0.0, 0
    for b, image_matches in enumerate(matches):
        for i, j in enumerate(image_matches):
            r = qs[b][i]
            positive = math.exp(_dot(r, ks[b][j]) / temperature)
            negative_sum = sum(math.exp(_dot(r, n) / temperature) for n in ns)
            total += -math.log(positive / (positive + negative_sum))
            rows += 1
    return total / rows
