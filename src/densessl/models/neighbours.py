"""SelfPatch's neighbours: the 3x3 window of every patch on a grid (:func:`neighbour_table`),
and the k most similar patches in it (:func:`selfpatch_neighbors`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from densessl.models.precision import at_least_float32

BORDERS = ("wrap", "clamp")
_NEIGHBOUR_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def neighbour_table(grid: tuple[int, int], border: str) -> torch.Tensor:
    """The 3x3-window neighbours of every cell of an (h, w) grid, the cell itself excluded.

    Cells row-major (``i = r * w + c``); columns in offset order (-1,-1), (-1,0), (-1,1), (0,-1),
    (0,1), (1,-1), (1,0), (1,1). ``border="wrap"``: offsets modulo the grid (SelfPatch's torus);
    ``"clamp"``: outside cells are -1. Repeats and the cell itself are -1 too. Returns (h*w, 8)
    int64 on the CPU (cached per grid and border; do not modify).
    """
    h, w = (int(v) for v in grid)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {', '.join(BORDERS)}, not {border!r}")
    key = (h, w, border)
    if key not in _NEIGHBOUR_TABLES:
        offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
        table = torch.full((h * w, len(offsets)), -1, dtype=torch.int64)
        for r in range(h):
            for c in range(w):
                seen = {r * w + c}
                for j, (dr, dc) in enumerate(offsets):
                    rr, cc = r + dr, c + dc
                    if border == "wrap":
                        rr, cc = rr % h, cc % w
                    elif not (0 <= rr < h and 0 <= cc < w):
                        continue
                    if rr * w + cc not in seen:
                        seen.add(rr * w + cc)
                        table[r * w + c, j] = rr * w + cc
        _NEIGHBOUR_TABLES[key] = table
    return _NEIGHBOUR_TABLES[key]


@torch.no_grad()
def selfpatch_neighbors(
    tokens: torch.Tensor, grid: tuple[int, int], k: int = 4, border: str = "wrap"
) -> torch.Tensor:
    """For each patch, its k most cosine-similar candidates of :func:`neighbour_table`; slots
    beyond the available candidates hold -1: (B, N, k) int64 indices into N, most similar first.

    Args:
        tokens: (B, N, D) patch tokens, N = h*w in row-major order; ``grid`` = (h, w).
        k: neighbours to keep (SelfPatch: 4), 1 <= k <= 8.
    """
    batch, n, _ = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    if not 1 <= k <= 8:
        raise ValueError(f"k must be between 1 and 8, not {k}")
    table = neighbour_table(grid, border).to(tokens.device)  # (N, 8)
    unit = F.normalize(at_least_float32(tokens), dim=-1)
    # All pairwise cosines then a gather: B·N² values instead of B·N·8·D gathered features.
    similarity = torch.bmm(unit, unit.transpose(1, 2))  # (B, N, N)
    candidates = similarity.gather(2, table.clamp(min=0).expand(batch, n, -1))  # (B, N, 8)
    candidates = candidates.masked_fill(table < 0, float("-inf"))
    best, slot = candidates.topk(k, dim=2)  # (B, N, k), most similar first
    index = table.expand(batch, n, -1).gather(2, slot)
    return index.masked_fill(best == float("-inf"), -1)
