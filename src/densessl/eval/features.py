"""Dense features of a frozen backbone over a labelled set, computed once and cached.

:func:`preprocess` resizes (aspect kept) to shorter side ``image_size``, each side the nearest
multiple of 32 (bilinear antialiased image, nearest labels), so a stride-``s`` cell covers an
``s x s`` block of labels exactly; then ImageNet mean/std. Images are never padded before the
backbone; stored grids are zero-padded bottom/right (labels with ``ignore_index``), each image's
own grid in :attr:`DenseFeatures.grid_sizes`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.device import module_device
from densessl.engine.checkpoint import atomic_save
from densessl.eval.segmentation import SegmentationDataset
from densessl.models.state_digest import state_digest
from densessl.progress import progress

SIZE_MULTIPLE = 32
LEVEL_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}  # ResNet outputs
DEFAULT_LEVELS = ("c5",)
CACHE_FORMAT = "densessl-features-v2"


@dataclass
class FeatureOptions:
    """How the probes turn labelled images into frozen dense features (shared by their options).

    Attributes:
        levels: backbone outputs concatenated as features; None = the backbone's default.
        batch_size: images per forward pass (and, for the linear probe, per training step).
        device: where the backbone and the probe run; None = where the backbone already is.
        seed: the probe's random choices (head init and batch order, or memory subsampling).
    """

    levels: list[str] | None = None
    image_size: int = 224
    batch_size: int = 16
    device: str | None = None
    seed: int = 0
    cache_dir: str | None = None

    def probe_device(self, backbone: nn.Module) -> torch.device:
        """``device``, or the backbone's when None."""
        return torch.device(self.device) if self.device is not None else module_device(backbone)


@dataclass
class DenseFeatures:
    """Frozen dense features of a labelled set, with the labels at the resized image resolution.

    Attributes:
        features: (N, C, h, w) float16 on the CPU; the levels resized to the finest grid and
            concatenated on channels. Zero outside an image's own grid.
        labels: (N, H, W) uint8 (int64 when an id exceeds 255) on the CPU, ``H = stride * h``,
            ``W = stride * w``; ``ignore_index`` outside an image's own size.
        grid_sizes: (N, 2) int64 each image's own (h_i, w_i).
        stride: label pixels per feature cell along each side.
        levels: the backbone outputs used, e.g. ``("c4", "c5")``.
    """

    features: torch.Tensor
    labels: torch.Tensor
    grid_sizes: torch.Tensor
    stride: int
    num_classes: int
    class_names: list[str]
    ignore_index: int
    levels: tuple[str, ...]
    image_size: int

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def channels(self) -> int:
        return self.features.shape[1]

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``i`` unpadded: features (C, h_i, w_i) float16, labels (H_i, W_i)."""
        h, w = (int(v) for v in self.grid_sizes[i])
        s = self.stride
        return self.features[i, :, :h, :w], self.labels[i, : s * h, : s * w]

    def groups(self) -> list[torch.Tensor]:
        """Indices of the images sharing one grid size, one int64 tensor per size."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (h, w) in enumerate(self.grid_sizes.tolist()):
            by_size[(h, w)].append(i)
        return [torch.tensor(v, dtype=torch.int64) for v in by_size.values()]

    def group_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, C, h, w) and labels (B, H, W) of images that share one grid size."""
        h, w = (int(v) for v in self.grid_sizes[indices[0]])
        s = self.stride
        return self.features[indices, :, :h, :w], self.labels[indices, : s * h, : s * w]

    def to_state(self) -> dict:
        """Tensors and plain values only, loadable with ``torch.load(weights_only=True)``."""
        return {
            "features": self.features,
            "labels": self.labels,
            "grid_sizes": self.grid_sizes,
            "stride": self.stride,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "levels": list(self.levels),
            "image_size": self.image_size,
        }

    @classmethod
    def from_state(cls, state: dict) -> DenseFeatures:
        return cls(**{**state, "levels": tuple(state["levels"])})


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(H, W) with the shorter side ~``image_size``, aspect kept, both multiples of 32."""
    scale = image_size / min(height, width)

    def side(length: int) -> int:
        return max(SIZE_MULTIPLE, round(length * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return side(height), side(width)


def preprocess(
    image: Image.Image, labels: np.ndarray, image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an RGB PIL image and its (H0, W0) labels for feature extraction (not normalised):
    (3, H, W) uint8 image and (H, W) int64 labels, H and W from :func:`resized_shape`."""
    if labels.shape != (image.height, image.width):
        raise ValueError(
            f"labels {labels.shape} do not match image {(image.height, image.width)} (H, W)"
        )
    height, width = resized_shape(image.height, image.width, image_size)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)
    # Nearest neighbour at pixel centres (the "nearest-exact" rule), on any integer dtype.
    rows = ((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.int64)
    label_map = torch.from_numpy(np.ascontiguousarray(labels[rows][:, cols]).astype(np.int64))
    return pixels, label_map


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 with ImageNet mean/std, on the input's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def dense_levels(outputs: dict[str, torch.Tensor], levels: Sequence[str]) -> torch.Tensor:
    """Concatenate ``levels`` of ``outputs`` (name -> (B, C_l, h_l, w_l)), in that channel order:
    (B, sum C_l, h, w), (h, w) the largest grid among ``levels`` (bilinear upsampling)."""
    maps = [outputs[name] for name in levels]
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    resized = [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in maps
    ]
    return torch.cat(resized, dim=1)


def level_strides(backbone: nn.Module) -> dict[str, int]:
    """Input pixels per cell of each dense output: the backbone's ``level_strides`` (a ViT's
    ``{"patch": p}``), else ResNet's :data:`LEVEL_STRIDES`."""
    return dict(getattr(backbone, "level_strides", LEVEL_STRIDES))


def resolve_levels(backbone: nn.Module, levels: Sequence[str] | None) -> tuple[str, ...]:
    """``levels``, or the backbone's ``default_levels`` (c5 for ResNets, patch for ViTs), checked
    against the outputs whose stride is known."""
    strides = level_strides(backbone)
    levels = tuple(levels) if levels else tuple(getattr(backbone, "default_levels", DEFAULT_LEVELS))
    unknown = [name for name in levels if name not in strides]
    if not levels or unknown:
        raise ValueError(f"levels must be among {', '.join(strides)}; got {levels}")
    return levels


def _label_dtype(num_classes: int, ignore_index: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 255 and 0 <= ignore_index <= 255 else torch.int64


def cache_key(
    backbone: nn.Module, dataset: SegmentationDataset, levels: Sequence[str], image_size: int
) -> str:
    """A digest of everything the features depend on: backbone class and weights; the dataset's
    class, length, class names, ignore label, items' :meth:`describe` and first labels; the
    levels and the image size."""
    digest = hashlib.sha256()
    digest.update(
        f"{CACHE_FORMAT}|{type(backbone).__qualname__}|{list(levels)}|{image_size}".encode()
    )
    digest.update(state_digest(backbone).encode())
    names = "|".join(dataset.class_names)
    digest.update(
        f"{type(dataset).__qualname__}|{len(dataset)}|{names}|{dataset.ignore_index}".encode()
    )
    for i in range(len(dataset)):
        digest.update(dataset.describe(i).encode())
    if len(dataset):
        digest.update(np.ascontiguousarray(dataset[0][1]).tobytes())
    return digest.hexdigest()


def _load_cache(path: Path, key: str) -> DenseFeatures | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("key") != key:
        return None
    return DenseFeatures.from_state(state["features"])


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: SegmentationDataset,
    levels: Sequence[str] | None = None,
    image_size: int = 224,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    cache_path: str | Path | None = None,
    *,
    _known_key: str | None = None,
) -> DenseFeatures:
    """Run a frozen backbone over a labelled set; its :class:`DenseFeatures`, on the CPU.

    Eval mode (restored afterwards) under ``torch.no_grad()``, not ``inference_mode``, so that
    probes may train on the features.

    Args:
        backbone: ``forward(x)`` -> ``{"c2": ..., "c5": ...}`` (at least ``levels``), or a ViT ->
            ``{"patch": (B, D, H/p, W/p), ...}`` (its ``level_strides`` name p).
        levels: outputs used, upsampled to the finest grid; None: the backbone's default.
        device: where the backbone runs; default: where it already is.
        cache_path: optional file; loaded if its :func:`cache_key` matches, else written.
    """
    levels = resolve_levels(backbone, levels)
    key = None
    if cache_path is not None:
        cache_path = Path(cache_path)
        # features_of has hashed the weights already to name the file; hash them only once.
        key = (
            _known_key
            if _known_key is not None
            else cache_key(backbone, dataset, levels, image_size)
        )
        cached = _load_cache(cache_path, key)
        if cached is not None:
            return cached
    device = torch.device(device) if device is not None else module_device(backbone)
    was_training = backbone.training
    backbone.eval().to(device)
    try:
        per_image = _extract(backbone, dataset, levels, image_size, batch_size, device)
    finally:
        backbone.train(was_training)
    stride = min(level_strides(backbone)[name] for name in levels)
    result = _pack(per_image, dataset, levels, image_size, stride)
    if cache_path is not None:
        atomic_save({"key": key, "features": result.to_state()}, cache_path)
    return result


def _extract(
    backbone: nn.Module,
    dataset: SegmentationDataset,
    levels: tuple[str, ...],
    image_size: int,
    batch_size: int,
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: features (C, h, w) float16 and labels (H, W) int64, both on the CPU."""
    results: list[tuple[torch.Tensor, torch.Tensor]] = []
    starts = range(0, len(dataset), batch_size)
    for start in progress(starts, "extracting features", unit="batch"):
        stop = min(start + batch_size, len(dataset))
        items = [preprocess(*dataset[i], image_size) for i in range(start, stop)]
        batch_features: list[torch.Tensor | None] = [None] * len(items)
        # One forward per image size in the batch: no image is ever padded.
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for j, (pixels, _) in enumerate(items):
            by_size[tuple(pixels.shape)].append(j)
        for members in by_size.values():
            pixels = torch.stack([items[j][0] for j in members]).to(device)
            maps = dense_levels(backbone(normalise(pixels)), levels)
            maps = maps.to(device="cpu", dtype=torch.float16)
            for j, feature_map in zip(members, maps, strict=True):
                batch_features[j] = feature_map
        for feature_map, (_, labels) in zip(batch_features, items, strict=True):
            results.append((feature_map, labels))
    return results


def _pack(
    per_image: list[tuple[torch.Tensor, torch.Tensor]],
    dataset: SegmentationDataset,
    levels: tuple[str, ...],
    image_size: int,
    stride: int,
) -> DenseFeatures:
    if not per_image:
        raise ValueError("the dataset is empty")
    grid_sizes = torch.tensor([list(f.shape[-2:]) for f, _ in per_image], dtype=torch.int64)
    for feature_map, labels in per_image:
        if tuple(labels.shape) != tuple(stride * s for s in feature_map.shape[-2:]):
            raise ValueError(
                f"a {tuple(feature_map.shape[-2:])} grid does not tile {tuple(labels.shape)} "
                f"labels with stride {stride}: the backbone's strides are not {levels}'s"
            )
    h, w = (int(v) for v in grid_sizes.max(0).values)
    channels = per_image[0][0].shape[0]
    dtype = _label_dtype(dataset.num_classes, dataset.ignore_index)
    features = torch.zeros(len(per_image), channels, h, w, dtype=torch.float16)
    labels = torch.full((len(per_image), stride * h, stride * w), dataset.ignore_index, dtype=dtype)
    # Pop from the end while copying, so that peak memory stays near one copy of the features.
    while per_image:
        i = len(per_image) - 1
        feature_map, label_map = per_image.pop()
        fh, fw = feature_map.shape[-2:]
        features[i, :, :fh, :fw] = feature_map
        labels[i, : stride * fh, : stride * fw] = label_map.to(dtype)
    return DenseFeatures(
        features=features,
        labels=labels,
        grid_sizes=grid_sizes,
        stride=stride,
        num_classes=dataset.num_classes,
        class_names=list(dataset.class_names),
        ignore_index=dataset.ignore_index,
        levels=levels,
        image_size=image_size,
    )


def features_of(
    data: SegmentationDataset | DenseFeatures,
    backbone: nn.Module,
    options: FeatureOptions,
    device: torch.device,
) -> DenseFeatures:
    """``data`` itself if it already is :class:`DenseFeatures`, else its extracted features,
    cached in ``options.cache_dir`` (if set) under :func:`cache_key`."""
    if isinstance(data, DenseFeatures):
        return data
    levels, size = options.levels, options.image_size
    cache_path, key = None, None
    if options.cache_dir is not None:
        key = cache_key(backbone, data, resolve_levels(backbone, levels), size)
        cache_path = Path(options.cache_dir) / f"features-{key[:20]}.pt"
    return extract_features(
        backbone, data, levels, size, options.batch_size, device, cache_path, _known_key=key
    )


def check_compatible(train: DenseFeatures, val: DenseFeatures) -> None:
    """Raise ValueError unless two feature sets share classes, levels and channels."""
    if (
        list(train.class_names) != list(val.class_names)
        or train.channels != val.channels
        or train.levels != val.levels
    ):
        raise ValueError(
            "training and validation features differ: "
            f"classes {train.class_names} vs {val.class_names}, levels {train.levels} vs "
            f"{val.levels}, channels {train.channels} vs {val.channels}"
        )
