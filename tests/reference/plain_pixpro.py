"""Plain-loop float64 references for PixPro's pixel pairs, propagation and loss, written from
the paper's formulas (Xie et al. 2021, Sec. 3.1-3.2) and the reference's crop coordinates.

Python loops over lists of floats, no torch arithmetic, so they share no code path with
``densessl.models.pixel_pairs``, ``densessl.models.propagation`` or ``densessl.losses``.
"""

from __future__ import annotations

import math


def _norm(v: list[float]) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(_norm(a), _norm(b), strict=True))


def plain_coords(box, flipped: bool, height: int, width: int) -> list[float]:
    """The reference's RandomResizedCropCoord + RandomHorizontalFlipCoord for a whole-pixel crop:
    left j, top i, size w × h -> [j/(W−1), i/(H−1), (j+w−1)/(W−1), (i+h−1)/(H−1)], x swapped
    when flipped."""
    x0, y0, x1, y1 = box
    j, i, w, h = x0, y0, x1 - x0, y1 - y0
    coord = [
        j / (width - 1),
        i / (height - 1),
        (j + w - 1) / (width - 1),
        (i + h - 1) / (height - 1),
    ]
    if flipped:
        coord[0], coord[2] = coord[2], coord[0]
    return coord


def plain_pairs(cq, ck, hq, wq, hk, wk, threshold) -> list[list[int]]:
    """m[i][j] = 1 when the bin centres of pixel i (view q) and j (view k) are closer than
    T × the larger bin diagonal."""

    def centres(c, h, w):
        bw, bh = (c[2] - c[0]) / w, (c[3] - c[1]) / h
        return [
            (c[0] + (x + 0.5) * bw, c[1] + (y + 0.5) * bh) for y in range(h) for x in range(w)
        ], math.sqrt(bw * bw + bh * bh)

    pq, dq = centres(cq, hq, wq)
    pk, dk = centres(ck, hk, wk)
    diag = max(dq, dk)
    return [[int(math.dist(a, b) / diag < threshold) for b in pk] for a in pq]


def plain_propagation(
    pixels: list[list[float]], values: list[list[float]], gamma: float
) -> list[list[float]]:
    """y_i = Σ_j max(cos(x_i, x_j), 0)^γ · v_j/‖v_j‖ over one view's pixels (rows: pixels)."""
    unit_values = [_norm(v) for v in values]
    out = []
    for xi in pixels:
        weights = [max(_cos(xi, xj), 0.0) ** gamma for xj in pixels]
        out.append(
            [
                sum(wt * v[d] for wt, v in zip(weights, unit_values, strict=True))
                for d in range(len(values[0]))
            ]
        )
    return out


def plain_pixpro_loss(pred, target, pairs) -> float:
    """Mean over images of −2 × the mean cosine over the image's positive pairs (0 if none)."""
    total = 0.0
    for y, x, m in zip(pred, target, pairs, strict=True):
        count = sum(sum(row) for row in m)
        s = sum(_cos(y[i], x[j]) for i in range(len(y)) for j in range(len(x)) if m[i][j])
        total += -2 * s / (count + 1e-6)
    return total / len(pred)
