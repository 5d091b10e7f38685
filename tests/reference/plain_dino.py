"""Plain-loop float64 references for DINO and SelfPatch, written from the formulas.

Python loops and explicit exp/log sums over lists of floats: no softmax, topk or gather from
torch, so they share no code path with ``densessl.losses`` / ``densessl.methods``.
"""

from __future__ import annotations

import math

import torch


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_sum = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_sum for x in row]


def plain_dino_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> float:
    """mean_b Σ_k −softmax((t_b − c)/τ_t)_k · log_softmax(s_b/τ_s)_k."""
    c = center.reshape(-1).tolist()
    total = 0.0
    rows = list(zip(student.tolist(), teacher.tolist(), strict=True))
    for s_row, t_row in rows:
        centred = [(t - ci) / teacher_temp for t, ci in zip(t_row, c, strict=True)]
        q = [math.exp(x) for x in _log_softmax(centred)]
        log_p = _log_softmax([s / student_temp for s in s_row])
        total += -sum(qk * lk for qk, lk in zip(q, log_p, strict=True))
    return total / len(rows)


def plain_multicrop_loss(student, teacher, center, student_temp, teacher_temp) -> float:
    """DINO's pairing: every teacher view a against every other student view b, averaged."""
    terms = []
    for a in range(len(teacher)):
        for b in range(len(student)):
            if a != b:
                terms.append(
                    plain_dino_loss(student[b], teacher[a], center, student_temp, teacher_temp)
                )
    return sum(terms) / len(terms)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def plain_window(r: int, c: int, h: int, w: int, border: str) -> set[int]:
    """Row-major indices of the other cells of the 3x3 window around (r, c)."""
    cells = set()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr, cc = r + dr, c + dc
            if border == "wrap":
                rr, cc = rr % h, cc % w
            elif not (0 <= rr < h and 0 <= cc < w):
                continue
            cells.add(rr * w + cc)
    cells.discard(r * w + c)
    return cells


def plain_selfpatch_neighbors(tokens: torch.Tensor, grid, k: int, border: str) -> list:
    """[b][i] -> the k window cells most similar (cosine) to cell i, best first, -1 padded."""
    h, w = grid
    result = []
    for image in tokens.tolist():
        units = []
        for t in image:
            norm = math.sqrt(sum(x * x for x in t))
            units.append([x / norm for x in t])
        rows = []
        for i in range(h * w):
            cells = plain_window(i // w, i % w, h, w, border)
            scores = {j: _dot(units[i], units[j]) for j in cells}
            scored = sorted(cells, key=lambda j: -scores[j])
            picked = scored[:k]
            rows.append(picked + [-1] * (k - len(picked)))
        result.append(rows)
    return result
