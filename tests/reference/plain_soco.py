"""SoCo's box-pair loss the way the reference code builds it, one slot pair at a time.

The reference (hologerry/SoCo ``regression_loss_bboxs_aware``) lays the boxes of every view out
in level-major slots and compares every slot with every slot; :func:`densessl.losses.box_pair_loss`
compares only the boxes themselves, so matching this is the check that the two agree.
"""

from __future__ import annotations

import torch.nn.functional as F


def reference_regression_loss(pred, target, pred_ids, target_ids, pred_levels, target_levels):
    """SoCo's ``regression_loss_bboxs_aware`` as the reference builds it: 4K level-major slots
    per view, slot (l, i) holding box i's id if box i is assigned to level l, else a per-view
    sentinel; every slot carries the same box vector at every level (only matches count)."""
    n, k, _ = pred.shape
    levels = 4
    total = 0.0
    for b in range(n):
        ids_a = [pred_ids[b, i].item() if pred_levels[b, i] == lv else -1
                 for lv in range(levels) for i in range(k)]  # fmt: skip
        ids_b = [target_ids[b, j].item() if target_levels[b, j] == lv else -2
                 for lv in range(levels) for j in range(k)]  # fmt: skip
        num = den = 0.0
        for s, ia in enumerate(ids_a):
            for t, ib in enumerate(ids_b):
                if ia == ib:
                    p, z = pred[b, s % k], target[b, t % k]
                    num += float(F.cosine_similarity(p, z, dim=0))
                    den += 1.0
        total += num / (den + 1e-6)
    return -2 * total / n
