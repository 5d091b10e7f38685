"""SoCo's object proposals: selective search, the reference filter with its fall-backs, levels.

SoCo (https://arxiv.org/abs/2106.02637) pairs RoI features of one selective-search box seen in
different views; whole-dataset storage: :mod:`densessl.data.proposal_store`. Boxes: ``(M, 4)``
``x1, y1, x2, y2``, continuous pixels (columns ``a..b`` give ``x1 = a, x2 = b + 1``), so widths
equal the reference's inclusive ones. ``port`` routes return the reference's numbers;
``opencv`` boxes are one pixel wider (a deviation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from densessl.data.reference_search import opencv, reference_selective_search
from densessl.errors import ConfigError

# SoCo's "ratio3size0308" strategy [hologerry/SoCo selective_search/filters.py].
MIN_SIDE = 32  # pixels of the original image, both sides
MAX_ASPECT = 3.0  # w / h in [1/3, 3]
SIZE_RANGE = (0.3, 0.8)  # sqrt(box area) / sqrt(image area)
LEVEL_THRESHOLDS = (48, 96, 192, 224)  # upper bounds of sqrt(w h) for P2, P3, P4, P5

# Selective search settings: the reference's single strategy (colour + texture + size + fill
# similarity summed) with its Felzenszwalb parameters (scale 300, sigma 0.9, min_size 100 px at
# full resolution), on an image whose longer side is at most SEARCH_MAX_SIDE pixels. 256 and the
# opencv route were chosen by measurement on CamVid (BENCHMARKS.md, "SoCo proposals"): with
# sigma scaled, as many of the reference's boxes as at full resolution, and the best route at
# the speed asked of it.
SEARCH_K = 300
SEARCH_SIGMA = 0.9
SEARCH_MIN_SIZE = 100
SEARCH_MAX_SIDE = 256

# How selective search is computed (see selective_search): name -> what the proposals file records.
ROUTES = {
    "opencv": "opencv-contrib selective search",
    "port": "reference selective search ported (scikit-image felzenszwalb)",
    "port_opencv_segments": "reference grouping on opencv felzenszwalb segments",
}
SEARCH_ROUTE = "opencv"


def _to_numpy(boxes: Any) -> np.ndarray:
    array = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (M, 4), got {tuple(array.shape)}")
    return array


def _side_rule(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return (w >= MIN_SIDE) & (h >= MIN_SIDE)


def _aspect_rule(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    # A box with h = 0 fails the side rule first in the reference (its `and` short-circuits);
    # here its ratio is set to 0, which fails this rule too, instead of dividing by zero.
    ratio = np.divide(w, h, out=np.zeros_like(w), where=h > 0)
    return (ratio >= 1.0 / MAX_ASPECT) & (ratio <= MAX_ASPECT)


def _size_rule(w: np.ndarray, h: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    # sqrt of each side of the fraction separately, as the reference does, so that boundary
    # cases (e.g. a 60x60 box in a 200x200 image, exactly 0.3) round the same way.
    relative = np.sqrt(np.clip(w * h, 0, None)) / math.sqrt(image_size[0] * image_size[1])
    return (SIZE_RANGE[0] <= relative) & (relative <= SIZE_RANGE[1])


def filter_boxes(boxes: Any, image_size: tuple[int, int]) -> Any:
    """Keep the proposals SoCo trains on, with the reference's fall-backs: (M, 4) xyxy pixel
    ``boxes`` (numpy or torch, M may be 0) -> (K, 4) kept, K >= 1, same kind, dtype and device.

    Rules, with ``w = x2 - x1``, ``h = y2 - y1`` and ``(H, W) = image_size``, tried in order
    until one keeps at least one box [hologerry/SoCo: ``selective_search/filters.py``,
    ``filter_ss_proposals_json*.py``, ``contrast/data/dataset.py``]:

    1. ``w >= 32 and h >= 32 and 1/3 <= w/h <= 3 and 0.3 <= sqrt(w h) / sqrt(W H) <= 0.8``;
    2. otherwise ``w >= 32 and h >= 32 and 1/3 <= w/h <= 3``;
    3. otherwise ``w >= 32 and h >= 32``;
    4. otherwise the whole image, ``[[0, 0, W, H]]``.

    Bounds inclusive; input order and duplicates kept, as in the reference's JSON.
    """
    array = _to_numpy(boxes)
    w = (array[:, 2] - array[:, 0]).astype(np.float64)
    h = (array[:, 3] - array[:, 1]).astype(np.float64)
    side = _side_rule(w, h)
    aspect = side & _aspect_rule(w, h)
    for keep in (aspect & _size_rule(w, h, image_size), aspect, side):
        if keep.any():
            if isinstance(boxes, torch.Tensor):
                return boxes[torch.from_numpy(keep).to(boxes.device)]
            return array[keep]
    height, width = image_size
    whole = np.array([[0, 0, width, height]], dtype=array.dtype)
    if isinstance(boxes, torch.Tensor):
        return torch.as_tensor(whole, device=boxes.device)
    return whole


def assign_levels(boxes: Any, thresholds: tuple[float, ...] = LEVEL_THRESHOLDS) -> Any:
    """FPN level of each of (M, 4) xyxy ``boxes`` in view pixels (numpy or torch): the first
    ``i`` with ``sqrt(w h) <= thresholds[i]``, as (M,) int64 like ``boxes`` (same device).

    Default: ``s <= 48`` -> 0 (P2), ``<= 96`` -> 1 (P3), ``<= 192`` -> 2 (P4), ``<= 224`` -> 3
    (P5), ``s = sqrt(w h)`` in view pixels [SoCo ``assign_bboxs_to_feature_map``]. A larger box
    gets **-1** (no level, no positive pair, as the reference): mask it, never index with it
    (``feats[-1]`` would silently pick P5). No integer truncation of widths (docs/deviations.md).
    """
    array = _to_numpy(boxes).astype(np.float64)
    size = np.sqrt(np.clip((array[:, 2] - array[:, 0]) * (array[:, 3] - array[:, 1]), 0, None))
    bounds = np.asarray(thresholds, dtype=np.float64)
    # searchsorted(side="left") gives the first i with size <= bounds[i]: the `<=` of the reference.
    levels = np.searchsorted(bounds, size, side="left").astype(np.int64)
    levels[levels == len(bounds)] = -1
    if isinstance(boxes, torch.Tensor):
        return torch.from_numpy(levels).to(boxes.device)
    return levels


def search_scale(image_size: tuple[int, int], max_side: int | None = SEARCH_MAX_SIDE) -> float:
    """Factor (<= 1) that brings the longer side of ``image_size`` down to ``max_side``."""
    if max_side is None:
        return 1.0
    return min(1.0, max_side / max(image_size))


def check_route(route: str) -> None:
    """Raise a one-line ConfigError unless ``route`` is one of :data:`ROUTES`."""
    if route not in ROUTES:
        raise ConfigError(f"unknown proposal route {route!r}; use one of {', '.join(ROUTES)}")


def _opencv_search(small: np.ndarray, sigma: float, min_size: int) -> np.ndarray:
    """OpenCV-contrib's selective search: (M, 4) ``x, y, x + w, y + h`` with ``w`` the pixel
    extent, in ``small``'s pixels."""
    seg = opencv().ximgproc.segmentation
    search = seg.createSelectiveSearchSegmentation()
    # Segment the RGB pixels, as the reference does (skimage's felzenszwalb on RGB). OpenCV's
    # own single strategy segments HSV instead; on CamVid that recovered 66% of the reference's
    # filtered boxes at full resolution against 78% for RGB. Channel order does not matter here.
    search.addImage(np.ascontiguousarray(small))
    search.addGraphSegmentation(seg.createGraphSegmentation(sigma, SEARCH_K, min_size))
    search.addStrategy(
        seg.createSelectiveSearchSegmentationStrategyMultiple(
            seg.createSelectiveSearchSegmentationStrategyColor(),
            seg.createSelectiveSearchSegmentationStrategyFill(),
            seg.createSelectiveSearchSegmentationStrategyTexture(),
            seg.createSelectiveSearchSegmentationStrategySize(),
        )
    )
    rects = np.asarray(search.process(), dtype=np.float64).reshape(-1, 4)  # x, y, w, h
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    # OpenCV ranks its boxes with a random draw: sort so the output does not depend on it.
    return boxes[np.lexsort(boxes.T[::-1])]


def selective_search(
    image: Image.Image | np.ndarray,
    max_side: int | None = SEARCH_MAX_SIDE,
    route: str = SEARCH_ROUTE,
) -> np.ndarray:
    """All selective-search boxes (unfiltered) of an RGB PIL image or (H, W, 3) uint8 array:
    (M, 4) float32 xyxy in the original image's pixels.

    The image is shrunk (area interpolation) to a longer side of at most ``max_side`` (None: full
    resolution; Felzenszwalb's ``min_size`` scales with the area, ``sigma`` with the side): the
    filter keeps only boxes of at least 0.3 x the image scale, which the small copy finds.
    Routes: ``"opencv"``, OpenCV-contrib's search with the reference's settings; ``"port"``, the
    reference ported (:mod:`densessl.data.reference_search`, needs scikit-image);
    ``"port_opencv_segments"``, the same grouping on OpenCV's Felzenszwalb segments. ConfigError
    for an unknown ``route``, or ``"port"`` without scikit-image.
    """
    check_route(route)
    cv2 = opencv()
    # One thread per search: parallelism comes from the process pool, over images.
    cv2.setNumThreads(1)
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    height, width = rgb.shape[:2]
    scale = search_scale((height, width), max_side)
    small = rgb
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    min_size = max(1, round(SEARCH_MIN_SIZE * scale * scale))
    # The smoothing shrinks with the image, so it stays 0.9 full-resolution pixels: the area
    # resize has already averaged the pixels. Measured on 100 CamVid frames (BENCHMARKS.md):
    # more of the reference's boxes at every size, for more time (more, smaller segments).
    sigma = SEARCH_SIGMA * scale
    sx, sy = width / small.shape[1], height / small.shape[0]
    if route == "opencv":
        x1, y1, x2, y2 = _opencv_search(small, sigma, min_size).T
        # x2 is the end of the pixel extent here: it scales as it is.
        boxes = np.stack([x1 * sx, y1 * sy, np.minimum(x2 * sx, width),
                          np.minimum(y2 * sy, height)], axis=1)  # fmt: skip
    else:
        segmenter = "skimage" if route == "port" else "opencv"
        found = reference_selective_search(small, SEARCH_K, sigma, min_size, segmenter)
        x1, y1, x2, y2 = found.astype(np.float64).T
        # The reference's x2 is the last pixel's column, one less than the extent's end: scale
        # the extent [x1, x2 + 1) and step back one full-resolution pixel (identity at scale 1).
        boxes = np.stack([x1 * sx, y1 * sy, (x2 + 1) * sx - 1, (y2 + 1) * sy - 1], axis=1)
    return boxes.astype(np.float32)


def image_proposals(
    image: Image.Image | np.ndarray,
    max_side: int | None = SEARCH_MAX_SIDE,
    route: str = SEARCH_ROUTE,
) -> np.ndarray:
    """Selective search then :func:`filter_boxes`: the (K, 4) float32 xyxy boxes (K >= 1) SoCo
    keeps for one image, in its pixels."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    return filter_boxes(selective_search(rgb, max_side, route), rgb.shape[:2])
