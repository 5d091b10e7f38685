"""Multi-view transform whose views remember where they came from.

Each view records its crop box in source pixels and its flip, so dense methods can match
locations between views exactly. Pixel ``i`` covers ``[i, i + 1)``; points are ``(x, y)``, sizes
``(height, width)``. Photometric parameters are only drawn here
(:func:`densessl.data.augment.apply_photometric` applies them in batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from densessl.data.augment import PhotometricSpec, draw_photometric
from densessl.data.reduced_decode import DeferredJpeg, decode_scale

# MoCo-v2: ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale p=0.2, blur sigma U(0.1, 2) p=0.5.
MOCO_V2_PHOTOMETRIC = PhotometricSpec()


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class ViewSpec:
    """How to make one view: RandomResizedCrop to ``size`` (h, w), flip, photometric recipe."""

    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    photometric: PhotometricSpec = field(default=MOCO_V2_PHOTOMETRIC)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the view."""
        return _pair(self.size)


def moco_v2_views(
    size: int,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    crop_scale: tuple[float, float] = (0.2, 1.0),
    blur_p: float = 0.5,
) -> list[ViewSpec]:
    """The two MoCo-v2 views: RandomResizedCrop(size, scale=crop_scale), flip 0.5, MoCo-v2's
    photometric recipe, blur σ in ``blur_sigma`` px with probability ``blur_p``."""
    photometric = replace(MOCO_V2_PHOTOMETRIC, blur_sigma=tuple(blur_sigma), blur_p=blur_p)
    spec = ViewSpec(size=size, scale=tuple(crop_scale), photometric=photometric)
    return [spec, spec]


# DINO (BYOL's recipe, DataAugmentationDINO): jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2;
# blur p=1.0 on the first global crop, p=0.1 plus solarize p=0.2 on the second, p=0.5 on local ones.
DINO_GLOBAL1_PHOTOMETRIC = PhotometricSpec(saturation=0.2, blur_p=1.0)
DINO_GLOBAL2_PHOTOMETRIC = PhotometricSpec(saturation=0.2, blur_p=0.1, solarize_p=0.2)
DINO_LOCAL_PHOTOMETRIC = PhotometricSpec(saturation=0.2, blur_p=0.5)


def multi_crop_views(
    global_size: int | tuple[int, int],
    local_size: int | tuple[int, int],
    local_crops: int,
    global_scale: tuple[float, float],
    local_scale: tuple[float, float],
) -> list[ViewSpec]:
    """DINO's multi-crop: two global views (different photometric recipes), then
    ``local_crops`` small views, each a RandomResizedCrop with its own scale range and a flip."""
    first = ViewSpec(global_size, tuple(global_scale), photometric=DINO_GLOBAL1_PHOTOMETRIC)
    second = ViewSpec(global_size, tuple(global_scale), photometric=DINO_GLOBAL2_PHOTOMETRIC)
    local = ViewSpec(local_size, tuple(local_scale), photometric=DINO_LOCAL_PHOTOMETRIC)
    return [first, second] + [local] * local_crops


# BYOL's asymmetric recipe (Grill et al. 2020, Table 6), also SoCo's: jitter (0.4, 0.4, 0.2, 0.1)
# p=0.8, grayscale p=0.2; blur p=1.0 on the first view; blur p=0.1 and solarize p=0.2 on the other.
BYOL_VIEW1_PHOTOMETRIC = PhotometricSpec(saturation=0.2, blur_p=1.0)
BYOL_VIEW2_PHOTOMETRIC = PhotometricSpec(saturation=0.2, blur_p=0.1, solarize_p=0.2)


def byol_views(size: int, scale: tuple[float, float] = (0.08, 1.0)) -> list[ViewSpec]:
    """BYOL's two views: RandomResizedCrop(size, scale), flip 0.5, the asymmetric colour recipe."""
    return [
        ViewSpec(size, tuple(scale), photometric=BYOL_VIEW1_PHOTOMETRIC),
        ViewSpec(size, tuple(scale), photometric=BYOL_VIEW2_PHOTOMETRIC),
    ]


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view came from: ``crop_box`` (x0, y0, x1, y1) of the crop in source pixels
    (continuous coordinates); ``flipped``, mirrored left-right after cropping and resizing."""

    crop_box: tuple[float, float, float, float]
    flipped: bool
    output_size: tuple[int, int]
    source_size: tuple[int, int]

    def _scale(self) -> tuple[float, float]:
        """Source pixels per view pixel along x and y."""
        x0, y0, x1, y1 = self.crop_box
        height, width = self.output_size
        return (x1 - x0) / width, (y1 - y0) / height

    def view_to_source(self, xy: torch.Tensor) -> torch.Tensor:
        """Map view points to source points: (..., 2) (x, y) -> (..., 2) (x, y)."""
        scale_x, scale_y = self._scale()
        x, y = xy.unbind(-1)
        if self.flipped:
            x = self.output_size[1] - x
        return torch.stack([self.crop_box[0] + x * scale_x, self.crop_box[1] + y * scale_y], -1)

    def source_to_view(self, xy: torch.Tensor) -> torch.Tensor:
        """Map source points to view points: (..., 2) (x, y) -> (..., 2) (x, y)."""
        scale_x, scale_y = self._scale()
        x, y = xy.unbind(-1)
        x = (x - self.crop_box[0]) / scale_x
        if self.flipped:
            x = self.output_size[1] - x
        return torch.stack([x, (y - self.crop_box[1]) / scale_y], -1)

    def _map_boxes(
        self, boxes: torch.Tensor, point_map: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        corners = point_map(boxes.reshape(-1, 2, 2))  # (M, 2 corners, 2 coords)
        # A flip swaps which corner is left, so re-sort x (and y, harmlessly).
        low = corners.min(dim=1).values
        high = corners.max(dim=1).values
        return torch.cat([low, high], dim=-1)

    def box_to_view(self, boxes: torch.Tensor) -> torch.Tensor:
        """Map source boxes to view boxes: (M, 4) xyxy -> (M, 4) xyxy (not clipped)."""
        return self._map_boxes(boxes, self.source_to_view)

    def box_to_source(self, boxes: torch.Tensor) -> torch.Tensor:
        """Map view boxes to source boxes: (M, 4) xyxy -> (M, 4) xyxy."""
        return self._map_boxes(boxes, self.view_to_source)


@dataclass
class View:
    """One augmented view: ``pixels`` (3, h, w) uint8, cropped, resized and possibly flipped (no
    photometric change); ``photometric`` (P,) float32 parameters for :func:`.apply_photometric`."""

    pixels: torch.Tensor
    geometry: ViewGeometry
    photometric: torch.Tensor


@dataclass
class ViewsWithExtras:
    """A transform's views with per-sample tensors (e.g. SoCo's boxes): ``extras``, name ->
    tensor of one shape for every sample, stacked into :attr:`densessl.data.batch.Batch.extras`."""

    views: list[View]
    extras: dict[str, torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    # float32 draws, as torchvision's get_params makes from the global generator.
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(0, high + 1, size=(1,), generator=generator).item())


def sample_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of a RandomResizedCrop by torchvision's ``get_params``
    rule and arithmetic (same boxes for the same seed): up to 10 tries of area U(scale) and
    log-uniform ratio w/h, else the largest central crop with the ratio clamped into ``ratio``."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * _uniform(generator, scale[0], scale[1])
        log_aspect = _uniform(generator, float(log_ratio[0]), float(log_ratio[1]))
        aspect = torch.exp(torch.tensor(log_aspect)).item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(generator, height - h)
            left = _randint(generator, width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(
    image: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]
) -> torch.Tensor:
    """Resample ``box`` of an RGB image to ``size`` (h, w), bilinear: -> (3, h, w) uint8. PIL maps
    pixel centre ``u + 0.5`` to ``x0 + (u + 0.5) * (x1 - x0) / w``, as :class:`ViewGeometry`."""
    resized = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class ViewDraw:
    """The random choices of one view, drawn before any pixel is decoded: ``box`` (x0, y0, x1,
    y1) in source pixels, ``flipped``, (P,) ``photometric`` parameters."""

    box: tuple[float, float, float, float]
    flipped: bool
    photometric: torch.Tensor

    @property
    def crop_size(self) -> tuple[float, float]:
        """(height, width) of the crop box in source pixels."""
        return self.box[3] - self.box[1], self.box[2] - self.box[0]


class MultiViewTransform:
    """Make one view per spec from an image, every random draw from the given generator, all
    before the pixels: a JPEG can be decoded at the reduced size the crops allow
    (:meth:`from_deferred`) with the same draws as a full decode."""

    def __init__(self, specs: Sequence[ViewSpec]) -> None:
        if not specs:
            raise ValueError("MultiViewTransform needs at least one ViewSpec")
        self.specs = list(specs)

    def draw(self, width: int, height: int, generator: torch.Generator) -> list[ViewDraw]:
        """Every view's random choices for a ``width`` x ``height`` source, in spec order."""
        draws = []
        for spec in self.specs:
            top, left, h, w = sample_crop(height, width, spec.scale, spec.ratio, generator)
            flipped = bool(torch.rand(1, generator=generator) < spec.flip_p)
            photometric = draw_photometric(spec.photometric, generator)
            box = (float(left), float(top), float(left + w), float(top + h))
            draws.append(ViewDraw(box, flipped, photometric))
        return draws

    def render(
        self, image: Image.Image, draws: list[ViewDraw], source_size: tuple[int, int], scale: int
    ) -> list[View]:
        """The views' pixels from ``image``, the source decoded at 1/``scale`` (source pixel
        x is x / scale there); geometry stays in source pixels of ``source_size`` (h, w)."""
        views = []
        for spec, d in zip(self.specs, draws, strict=True):
            reduced_box = tuple(c / scale for c in d.box)
            pixels = crop_resize(image, reduced_box, spec.output_size)
            if d.flipped:
                pixels = pixels.flip(-1).contiguous()
            geometry = ViewGeometry(d.box, d.flipped, spec.output_size, source_size)
            views.append(View(pixels=pixels, geometry=geometry, photometric=d.photometric))
        return views

    def __call__(self, image: Image.Image, generator: torch.Generator) -> list[View]:
        """Views of ``image`` (RGB), in spec order."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        return self.render(image, self.draw(width, height, generator), (height, width), 1)

    def from_deferred(self, jpeg: DeferredJpeg, generator: torch.Generator) -> list[View]:
        """Views of a not yet decoded JPEG, decoded once at the smallest scale every crop
        allows (:func:`densessl.data.reduced_decode.decode_scale`)."""
        width, height = jpeg.size
        draws = self.draw(width, height, generator)
        scale = decode_scale([d.crop_size for d in draws], [s.output_size for s in self.specs])
        return self.render(jpeg.decode(scale), draws, (height, width), scale)
