"""Plain-loop float64 reference for MCL's montage-cell loss, written from the formula.

One cell and one target at a time with an explicit log-sum-exp, no cross-entropy helper, so it
shares no code path with ``densessl.losses``.
"""

from __future__ import annotations

import math

import torch


def plain_cell_loss(pred, targets, labels, temperature):
    """2T · mean over cells of −log softmax, one float64 cell and target at a time."""
    total = 0.0
    for p, label in zip(pred.double(), labels.tolist(), strict=True):
        p = p / p.norm()
        logits = [float(p @ z) / temperature for z in targets.double()]
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(x - top) for x in logits))
        total += log_sum - logits[label]
    return 2 * temperature * total / len(labels)


def weighted_cell_loss(preds, labels, targets, weights, temperature):
    """Σ_i w_i · 2T · mean_c [log Σ_m exp(⟨p̂_c, z_m⟩/T) − ⟨p̂_c, z_{y_c}⟩/T] over the levels'
    cells, written from the formula in differentiable torch (no cross-entropy helper), for
    gradient checks: ``preds`` per level (n_i, D), ``labels`` per level (n_i,) indices into
    ``targets`` (N, D)."""
    total = 0.0
    for weight, pred, label in zip(weights, preds, labels, strict=True):
        unit = pred / pred.norm(dim=1, keepdim=True)
        logits = unit @ targets.t() / temperature  # (n, N)
        positive = logits[torch.arange(len(label)), label]
        total = total + weight * 2 * temperature * (logits.logsumexp(dim=1) - positive).mean()
    return total
