"""Selective search's hierarchical grouping as SoCo's reference runs it, with numpy.

The reference [hologerry/SoCo ``selective_search/selective_search.py``, AlpacaDB's
``selectivesearch``] merges the most similar neighbouring pair of an over-segmentation until
none is left, returning every region's box. Its rules, including deviations from Uijlings et al.:

* **Regions** are numbered by first pixel in a row-major scan; that order breaks ties.
* **Colour**: ``rgb2hsv`` on 0..255 floats, 25 bins over 0..255 per channel; hue and saturation
  (in 0..1) always fill the first bin (+2 to every similarity), so only ``max(R, G, B)`` counts.
* **Texture**: LBP of each RGB channel, 10 bins over 0..255.
* Histograms are L1-normalised; a merged region's is the size-weighted mean of its parts'.
* **Neighbours**: pairs where some corner of the later region's inclusive box lies strictly
  inside the earlier one's; a merged region inherits its parts'.
* **Similarity** = colour + texture + size + fill, with histogram intersection
  ``sum_b min(h1[b], h2[b])``, size ``1 - (s1 + s2) / (H W)`` and fill
  ``1 - (B - s1 - s2) / (H W)``, ``B = (max_x - min_x) (max_y - min_y)`` of the joint box.
* Ties go to the pair created last (the reference's stable sort). Sums run in the reference's
  order, so similarities and merge order match it bit for bit.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from densessl.data.local_binary_pattern import local_binary_pattern

COLOUR_BINS = 25
TEXTURE_BINS = 10
HISTOGRAM_RANGE = 255.0
# Hue and saturation each put the whole region in bin 0 (see the module docstring): their
# intersection adds 1 + 1 before the value bins.
HUE_SATURATION_INTERSECTION = 2.0


@dataclass
class Regions:
    """Per-region features, rows in first-appearance order (merged regions appended).

    Attributes:
        boxes: (R, 4) int64 ``min_x, min_y, max_x, max_y`` of the region's pixels (inclusive).
        sizes: (R,) int64 pixel counts.
        colour: (R, 25) value (``max(R, G, B)``) histogram, L1-normalised.
        texture: (R, 30) LBP histograms of R, G, B (10 bins each), L1-normalised.
    """

    boxes: np.ndarray
    sizes: np.ndarray
    colour: np.ndarray
    texture: np.ndarray


def _bin_lookup(bins: int) -> np.ndarray:
    """Bin of each integer 0..255 under ``np.histogram(x, bins, (0, 255))``'s edges."""
    edges = np.linspace(0.0, HISTOGRAM_RANGE, bins + 1)
    return np.minimum(np.searchsorted(edges, np.arange(256), side="right") - 1, bins - 1)


def _first_appearance_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel so region ``k`` is the k-th label met in a row-major scan; returns flat labels."""
    values, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(values))
    return rank[inverse.ravel()], len(values)


def region_features(labels: np.ndarray, rgb: np.ndarray) -> Regions:
    """:class:`Regions` of (H, W) integer ``labels`` (any values) over an (H, W, 3) uint8 (or
    integer-valued) ``rgb`` image, in first-appearance order."""
    height, width = labels.shape
    flat, count = _first_appearance_labels(labels)
    sizes = np.bincount(flat, minlength=count)
    order = np.argsort(flat, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ys, xs = np.divmod(order, width)
    boxes = np.stack(
        [
            np.minimum.reduceat(xs, starts),
            np.minimum.reduceat(ys, starts),
            np.maximum.reduceat(xs, starts),
            np.maximum.reduceat(ys, starts),
        ],
        axis=1,
    ).astype(np.int64)
    pixels = np.asarray(rgb).reshape(height * width, 3).astype(np.int64)
    value_bin = _bin_lookup(COLOUR_BINS)[pixels.max(axis=1)]
    colour = np.bincount(flat * COLOUR_BINS + value_bin, minlength=count * COLOUR_BINS)
    texture_bin = _bin_lookup(TEXTURE_BINS)
    texture = np.zeros(count * 3 * TEXTURE_BINS, dtype=np.int64)
    for channel in range(3):
        codes = local_binary_pattern(np.asarray(rgb)[:, :, channel]).ravel()
        keys = (flat * 3 + channel) * TEXTURE_BINS + texture_bin[codes]
        texture += np.bincount(keys, minlength=count * 3 * TEXTURE_BINS)
    return Regions(
        boxes=boxes,
        sizes=sizes.astype(np.int64),
        colour=colour.reshape(count, COLOUR_BINS) / sizes[:, None],
        texture=texture.reshape(count, 3 * TEXTURE_BINS) / sizes[:, None],
    )


def box_neighbours(boxes: np.ndarray) -> np.ndarray:
    """Pairs ``(a, b)``, ``a < b``, of (R, 4) inclusive ``boxes`` where one of b's x bounds is
    strictly inside a's x range and one of its y bounds inside a's y range (a corner of b in a):
    (P, 2) int64 in row-major ``(a, b)`` order, the reference's order."""
    a, b = boxes[:, None, :], boxes[None, :, :]

    def inside(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        return (low < value) & (value < high)

    x_in = inside(b[..., 0], a[..., 0], a[..., 2]) | inside(b[..., 2], a[..., 0], a[..., 2])
    y_in = inside(b[..., 1], a[..., 1], a[..., 3]) | inside(b[..., 3], a[..., 1], a[..., 3])
    keep = np.triu(x_in & y_in, k=1)
    return np.argwhere(keep).astype(np.int64)


def similarity(regions: Regions, first: np.ndarray, second: np.ndarray, area: int) -> np.ndarray:
    """(P,) float64 reference similarity (colour + texture + size + fill, summed in its order)
    of region pairs ``(first[k], second[k])``, (P,) indices; ``area`` = ``H W``."""
    # Sequential sums (cumsum runs left to right) starting where Python's sum() would: after
    # the hue and saturation bins for colour, from 0 for texture.
    colour_min = np.minimum(regions.colour[first], regions.colour[second])
    start = np.full((len(first), 1), HUE_SATURATION_INTERSECTION)
    colour = np.cumsum(np.concatenate([start, colour_min], axis=1), axis=1)[:, -1]
    texture = np.cumsum(np.minimum(regions.texture[first], regions.texture[second]), axis=1)
    sizes = regions.sizes[first] + regions.sizes[second]
    lo = np.minimum(regions.boxes[first, :2], regions.boxes[second, :2])
    hi = np.maximum(regions.boxes[first, 2:], regions.boxes[second, 2:])
    joint = (hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1])
    size = 1.0 - sizes / area
    fill = 1.0 - (joint - regions.sizes[first] - regions.sizes[second]) / area
    return colour + texture[:, -1] + size + fill


def _grow(regions: Regions, capacity: int) -> Regions:
    """Copy of ``regions`` with room for ``capacity`` rows (merged regions are appended)."""

    def grown(array: np.ndarray) -> np.ndarray:
        out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
        out[: len(array)] = array
        return out

    return Regions(*(grown(a) for a in (regions.boxes, regions.sizes, regions.colour,
                                        regions.texture)))  # fmt: skip


def group(regions: Regions, area: int) -> np.ndarray:
    """Merge until no neighbouring pair is left; the box of every region ever held: (2R - C, 4)
    int64 inclusive boxes, the R initial regions in order, then each merged region in creation
    order (C: regions never merged away at the end)."""
    count = len(regions.sizes)
    state = _grow(regions, 2 * count)
    pairs = box_neighbours(regions.boxes)
    # neighbours[r] maps each live neighbour of r to the creation number of their pair, which
    # is the pair's position in the reference's similarity dict (ties go to the largest).
    neighbours: list[dict[int, int]] = [{} for _ in range(2 * count)]
    heap: list[tuple[float, int, int, int]] = []
    sims = similarity(state, pairs[:, 0], pairs[:, 1], area).tolist()
    for seq, ((a, b), sim) in enumerate(zip(pairs.tolist(), sims, strict=True)):
        neighbours[a][b] = neighbours[b][a] = seq
        heap.append((-sim, -seq, a, b))
    heapq.heapify(heap)
    next_seq, made = len(pairs), count
    alive = np.zeros(2 * count, dtype=bool)
    alive[:count] = True
    while heap:
        _, _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # a pair of a region already merged away: removed in the reference
        new = made
        made += 1
        _merge_into(state, i, j, new)
        alive[i] = alive[j] = False
        alive[new] = True
        # The new region's pairs are created in the order their first old pair was.
        inherited: dict[int, int] = {}
        for old, other in ((i, j), (j, i)):
            for n, seq in neighbours[old].items():
                if n != other:
                    inherited[n] = min(seq, inherited.get(n, seq))
                    neighbours[n].pop(old, None)
        neighbours[i], neighbours[j] = {}, {}
        if not inherited:
            continue
        ns = np.array(sorted(inherited, key=inherited.__getitem__), dtype=np.int64)
        values = similarity(state, np.full(len(ns), new), ns, area).tolist()
        for n, sim in zip(ns.tolist(), values, strict=True):
            neighbours[new][n] = neighbours[n][new] = next_seq
            heapq.heappush(heap, (-sim, -next_seq, new, n))
            next_seq += 1
    return state.boxes[:made]


def _merge_into(state: Regions, i: int, j: int, new: int) -> None:
    """Row ``new`` = regions ``i`` and ``j`` joined (box union, size sum, weighted histograms)."""
    si, sj = int(state.sizes[i]), int(state.sizes[j])
    total = si + sj
    state.boxes[new, :2] = np.minimum(state.boxes[i, :2], state.boxes[j, :2])
    state.boxes[new, 2:] = np.maximum(state.boxes[i, 2:], state.boxes[j, 2:])
    state.sizes[new] = total
    state.colour[new] = (state.colour[i] * si + state.colour[j] * sj) / total
    state.texture[new] = (state.texture[i] * si + state.texture[j] * sj) / total


def hierarchical_grouping(labels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Every box of the reference's grouping of an (H, W) over-segmentation of (H, W, 3) ``rgb``:
    (M, 4) int64 inclusive ``min_x, min_y, max_x, max_y`` boxes, in the reference's order."""
    return group(region_features(labels, rgb), labels.shape[0] * labels.shape[1])
