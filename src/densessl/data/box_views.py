"""SoCo's views and the object-proposal boxes they share.

From one image and its proposals ((M, 4) xyxy source pixels): V1 the whole image resized to
``size`` x ``size`` (aspect not kept, as the reference); V2 a RandomResizedCrop (area
``crop_scale``) to ``size``; V3 an independent crop to ``small_size``; SoCo* only, V4 V2's window
at ``extra_size`` with its own flip and colour. For each pair (V1, Vb), K box slots:

1. candidates: proposals overlapping the intersection of the two crop windows; crops are redrawn
   (up to ``max_tries``) while a pair has fewer than ``need``, from max(K // 2, 1) halving per draw;
2. K drawn without replacement (all when fewer; none: the overlap window is the one box);
3. V1's copy jittered with probability ``jitter_p`` (x0 += u₁w, y0 += u₂h, w *= 1 + u₃,
   h *= 1 + u₄, uᵢ ~ U(−r, r)), clipped to V1; Vb's copy clipped to Vb's window;
4. each view's list padded to K with random duplicates (ids say which slots match:
   :func:`densessl.losses.box_pair_loss`);
5. mapped into view pixels with :class:`ViewGeometry`.

SoCo*'s (V1, V4) reuses (V1, V2)'s slots. Cutout: in each non-V1 view each slot, with p
``cutout_p``, gets a square of U(cutout_scale) × box area centred uniformly in the box, zeroed
after normalisation.

Extras (P pairs, V views, K slots): ``"boxes"`` (P, 2, K, 4) float32 view pixels (``[p, 0]`` in
V1); ``"box_ids"`` (P, 2, K) int64 proposal ids; ``"cutout"`` (V, K, 4) float32, zero where none
(only when ``cutout_p > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from densessl.data.augment import draw_photometric
from densessl.data.views import (
    BYOL_VIEW1_PHOTOMETRIC,
    BYOL_VIEW2_PHOTOMETRIC,
    PhotometricSpec,
    View,
    ViewGeometry,
    ViewsWithExtras,
    crop_resize,
    sample_crop,
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxViewsSpec:
    """Every number of SoCo's view and box construction (see the module docstring)."""

    size: int = 224  # V1 and V2 side
    small_size: int = 112  # V3 side (SoCo: 112, SoCo*: 192)
    extra_size: int = 0  # SoCo*'s V4 (V2 resized), 112; 0 = no V4
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    boxes_per_pair: int = 4  # K
    max_tries: int = 5
    jitter_p: float = 0.5
    jitter_ratio: float = 0.1
    cutout_p: float = 0.0
    cutout_scale: tuple[float, float] = (0.1, 0.3)
    whole_photometric: PhotometricSpec = field(default=BYOL_VIEW1_PHOTOMETRIC)
    crop_photometric: PhotometricSpec = field(default=BYOL_VIEW2_PHOTOMETRIC)

    @property
    def view_sizes(self) -> list[int]:
        sizes = [self.size, self.size, self.small_size]
        return [*sizes, self.extra_size] if self.extra_size else sizes

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(V1, Vb) view-index pairs, in the order of the ``boxes`` extra."""
        return [(0, b) for b in range(1, len(self.view_sizes))]


def _uniform(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def overlapping(boxes: torch.Tensor, window: Box) -> torch.Tensor:
    """(M, 4) xyxy -> (M,) bool: the box and the window share a region of positive area."""
    x0, y0, x1, y1 = window
    return (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)


def clip_boxes(boxes: torch.Tensor, window: Box) -> torch.Tensor:
    """(M, 4) xyxy clipped to ``window`` (x0, y0, x1, y1): the part of each box inside it."""
    low = boxes.new_tensor(window[:2]).repeat(2)
    high = boxes.new_tensor(window[2:]).repeat(2)
    return torch.maximum(torch.minimum(boxes, high), low)


def intersect(a: Box, b: Box) -> Box:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def jitter_boxes(
    boxes: torch.Tensor, p: float, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """SoCo's box jitter (module docstring, step 3) with probability ``p`` per box: (M, 4) ->
    (M, 4)."""
    apply = _uniform(generator, len(boxes)) < p  # (M,)
    u = (_uniform(generator, len(boxes), 4) * 2 - 1) * ratio  # (M, 4) in [−r, r)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x0, y0 = boxes[:, 0] + u[:, 0] * w, boxes[:, 1] + u[:, 1] * h
    jittered = torch.stack([x0, y0, x0 + w * (1 + u[:, 2]), y0 + h * (1 + u[:, 3])], dim=1)
    return torch.where(apply[:, None], jittered, boxes)


def pad_slots(count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the K slots: 0..count-1, then K − count random duplicates (count <= K)."""
    extra = torch.randint(0, count, (max(0, k - count),), generator=generator)
    return torch.cat([torch.arange(count), extra])


def cutout_rects(
    boxes: torch.Tensor,
    p: float,
    scale: tuple[float, float],
    view_size: tuple[int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Box-aware cutout squares for (K, 4) view-pixel ``boxes``, each with probability ``p``, of
    area U(``scale``) x the box's, clipped to ``view_size``: (K, 4) xyxy, zero where none."""
    k = len(boxes)
    apply = _uniform(generator, k) < p
    fraction = scale[0] + (scale[1] - scale[0]) * _uniform(generator, k)
    where = _uniform(generator, k, 2)  # the centre, as a fraction of the box
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    half = torch.sqrt(fraction * w * h) / 2
    cx, cy = boxes[:, 0] + where[:, 0] * w, boxes[:, 1] + where[:, 1] * h
    rects = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)
    rects = clip_boxes(rects, (0.0, 0.0, float(view_size[1]), float(view_size[0])))
    return torch.where(apply[:, None], rects, torch.zeros_like(rects)).float()


@dataclass
class _PairSlots:
    """One pair's K slots in source pixels: V1's (jittered) boxes, Vb's boxes, their ids."""

    first: torch.Tensor  # (K, 4)
    second: torch.Tensor  # (K, 4)
    first_ids: torch.Tensor  # (K,)
    second_ids: torch.Tensor  # (K,)


def _pair_in_views(first: View, second: View, slots: _PairSlots) -> torch.Tensor:
    """(2, K, 4): the pair's slots in the pixels of its first and second view."""
    return torch.stack(
        [first.geometry.box_to_view(slots.first), second.geometry.box_to_view(slots.second)]
    )


class BoxViewsTransform:
    """Make SoCo's views of one image and the box slots of every pair (module docstring)."""

    def __init__(self, spec: BoxViewsSpec) -> None:
        self.spec = spec

    def draw_windows(
        self, proposals: torch.Tensor, source: tuple[int, int], generator: torch.Generator
    ) -> tuple[list[Box], list[torch.Tensor]]:
        """The crop windows (V1 whole, then the crops) and each pair's candidate proposals."""
        spec, (height, width) = self.spec, source
        need = max(spec.boxes_per_pair // 2, 1)
        for _ in range(max(spec.max_tries, 1)):
            windows: list[Box] = [(0.0, 0.0, float(width), float(height))]
            for _ in range(2):  # V2 and V3, independent crops
                top, left, h, w = sample_crop(height, width, spec.crop_scale, spec.crop_ratio,
                                              generator)  # fmt: skip
                windows.append((float(left), float(top), float(left + w), float(top + h)))
            candidates = [
                overlapping(proposals, intersect(windows[0], windows[b])).nonzero().squeeze(1)
                for b in (1, 2)
            ]
            if min(len(c) for c in candidates) >= need:
                break
            need = max(need // 2, 1)
        if spec.extra_size:
            windows.append(windows[1])  # V4 shows V2's window
        return windows, candidates

    def pair_slots(
        self,
        proposals: torch.Tensor,
        candidates: torch.Tensor,
        first: Box,
        second: Box,
        generator: torch.Generator,
    ) -> _PairSlots:
        spec, k = self.spec, self.spec.boxes_per_pair
        if len(candidates) > k:
            candidates = candidates[torch.randperm(len(candidates), generator=generator)[:k]]
        chosen, ids = proposals[candidates], candidates
        if len(chosen) == 0:  # nothing overlaps both: the shared window is the one "proposal"
            chosen = torch.tensor([intersect(first, second)], dtype=proposals.dtype)
            ids = torch.tensor([len(proposals)])
        jittered = clip_boxes(jitter_boxes(chosen, spec.jitter_p, spec.jitter_ratio, generator),
                              first)  # fmt: skip
        empty = (jittered[:, 2] <= jittered[:, 0]) | (jittered[:, 3] <= jittered[:, 1])
        jittered = torch.where(empty[:, None], clip_boxes(chosen, first), jittered)
        visible = clip_boxes(chosen, second)
        first_slots = pad_slots(len(chosen), k, generator)
        second_slots = pad_slots(len(chosen), k, generator)
        return _PairSlots(
            jittered[first_slots], visible[second_slots], ids[first_slots], ids[second_slots]
        )

    def render(
        self,
        image: Image.Image,
        window: Box,
        size: int,
        photometric: PhotometricSpec,
        generator: torch.Generator,
    ) -> View:
        flipped = bool(torch.rand(1, generator=generator) < self.spec.flip_p)
        pixels = crop_resize(image, window, (size, size))
        if flipped:
            pixels = pixels.flip(-1).contiguous()
        geometry = ViewGeometry(window, flipped, (size, size), (image.height, image.width))
        return View(pixels, geometry, draw_photometric(photometric, generator))

    def __call__(
        self, image: Image.Image, generator: torch.Generator, proposals: np.ndarray | torch.Tensor
    ) -> ViewsWithExtras:
        """Views and box extras of ``image`` (RGB) with its (M, 4) xyxy source-pixel proposals."""
        spec = self.spec
        if image.mode != "RGB":
            image = image.convert("RGB")
        source = (image.height, image.width)
        boxes = torch.as_tensor(np.asarray(proposals, dtype=np.float64)).reshape(-1, 4)
        if len(boxes) == 0:  # no proposal survived filtering: the whole image (reference)
            boxes = torch.tensor([[0.0, 0.0, float(image.width), float(image.height)]])
        windows, candidates = self.draw_windows(boxes, source, generator)
        slots = [
            self.pair_slots(boxes, candidates[b - 1], windows[0], windows[b], generator)
            for b in (1, 2)
        ]
        if spec.extra_size:
            slots.append(slots[0])  # (V1, V4) reuses (V1, V2)'s slots, as the reference
        photometric = [spec.whole_photometric] + [spec.crop_photometric] * (len(windows) - 1)
        views = [
            self.render(image, window, size, style, generator)
            for window, size, style in zip(windows, spec.view_sizes, photometric, strict=True)
        ]
        in_view = torch.stack(
            [
                _pair_in_views(views[0], views[b], s)
                for (_, b), s in zip(spec.pairs, slots, strict=True)
            ]
        ).float()  # (P, 2, K, 4)
        ids = torch.stack([torch.stack([s.first_ids, s.second_ids]) for s in slots])  # (P, 2, K)
        extras = {"boxes": in_view, "box_ids": ids.long()}
        if spec.cutout_p > 0:
            extras["cutout"] = self.cutouts(in_view, views, generator)
        return ViewsWithExtras(views, extras)

    def cutouts(
        self, in_view: torch.Tensor, views: list[View], generator: torch.Generator
    ) -> torch.Tensor:
        """(V, K, 4) cutout squares: none in V1, drawn over each other view's own box slots."""
        rects = torch.zeros(len(views), self.spec.boxes_per_pair, 4)
        for p, (_, b) in enumerate(self.spec.pairs):
            size = views[b].geometry.output_size
            rects[b] = cutout_rects(in_view[p, 1].double(), self.spec.cutout_p,
                                    self.spec.cutout_scale, size, generator)  # fmt: skip
        return rects
