"""Plain-loop float64 reference for MCL's montage-cell loss, written from the formula.

One cell and one target at a time with an explicit log-sum-exp, no cross-entropy helper, so it
shares no code path with ``densessl.losses``.
"""

from __future__ import annotations

import math


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
