"""Dense nearest-neighbour segmentation with no training ("Hummingbird"-style retrieval).

Memory: every training feature cell, L2-normalised, labelled with the class histogram of its
``stride x stride`` pixels summing to 1 (ignore pixels excluded, empty cells dropped);
``memory_per_image`` subsamples uniformly (unbiased, where Hummingbird favours rare classes).
Query: each validation cell averages the labels of its ``k`` most cosine-similar memory cells
with weights ``softmax(similarity / temperature)``; scores are upsampled bilinearly and
arg-maxed. A running top-k over ``chunk_size`` blocks never builds the full similarity matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densessl.errors import ConfigError
from densessl.eval.features import DenseFeatures, FeatureOptions, check_compatible, features_of
from densessl.eval.metrics import SegmentationScores, confusion_matrix
from densessl.eval.segmentation import SegmentationDataset
from densessl.progress import progress

DEFAULT_K = 30
DEFAULT_TEMPERATURE = 0.02
DEFAULT_CHUNK_SIZE = 4096


@dataclass
class KnnSegOptions(FeatureOptions):
    """The k-NN probe's options: feature extraction (:class:`FeatureOptions`) and retrieval.

    Attributes:
        k: neighbours per patch (Hummingbird: 30).
        temperature: softmax temperature on cosine similarities (Hummingbird: 0.02).
        memory_per_image: at most this many patches per training image (None: all).
        chunk_size: query (whole images, >= 1) and memory patches per block (None: no chunking).
    """

    k: int = DEFAULT_K
    temperature: float = DEFAULT_TEMPERATURE
    memory_per_image: int | None = None
    chunk_size: int | None = DEFAULT_CHUNK_SIZE


def check_knn_options(options: KnnSegOptions) -> None:
    """Raise ConfigError, naming the option and its range, for options that score nothing
    meaningful (k = 0 averages no neighbour)."""
    if options.k < 1:
        raise ConfigError(f"k={options.k}: the k-NN probe needs at least 1 neighbour (default 30)")
    if not options.temperature > 0:
        raise ConfigError(f"temperature={options.temperature} must be positive (default 0.02)")
    for name in ("memory_per_image", "chunk_size"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name}={value} must be at least 1, or null for no limit")


def patch_label_histograms(
    labels: torch.Tensor, stride: int, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """Class histogram (K = ``num_classes``, ``ignore_index`` not counted) of each
    ``stride x stride`` cell of (H, W) ``labels``, H and W multiples of ``stride``: (H/stride *
    W/stride, K) float32 pixel counts per cell, cells in row-major order."""
    height, width = labels.shape
    grid_w = width // stride
    labels = labels.to(torch.int64)
    rows = torch.arange(height, device=labels.device) // stride
    cols = torch.arange(width, device=labels.device) // stride
    cell = rows[:, None] * grid_w + cols[None, :]
    scored = labels != ignore_index
    index = cell[scored] * num_classes + labels[scored]
    cells = (height // stride) * grid_w
    counts = torch.bincount(index, minlength=cells * num_classes)
    return counts.reshape(cells, num_classes).float()


def build_memory(
    data: DenseFeatures, memory_per_image: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The retrieval memory of training features (N, C, h, w) and labels (N, H, W): keys (M, C)
    float16, L2-normalised, and soft labels (M, K) float32, rows summing to 1; at most
    ``memory_per_image`` labelled patches per image (None: all), drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    keys, soft_labels = [], []
    for i in progress(range(len(data)), "building k-NN memory", unit="img"):
        features, labels = data.item(i)
        counts = patch_label_histograms(labels, data.stride, data.num_classes, data.ignore_index)
        patches = features.flatten(1).T  # (h * w, C), row-major like the histograms
        keep = torch.nonzero(counts.sum(1) > 0).squeeze(1)
        if memory_per_image is not None and len(keep) > memory_per_image:
            keep = keep[torch.randperm(len(keep), generator=generator)[:memory_per_image]]
        counts = counts[keep]
        keys.append(F.normalize(patches[keep].float(), dim=1).half())
        soft_labels.append(counts / counts.sum(1, keepdim=True))
    return torch.cat(keys), torch.cat(soft_labels)


def nearest_neighbours(
    queries: torch.Tensor, keys: torch.Tensor, k: int, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of (Q, C) float32 ``queries`` against (M, C) ``keys`` (any float
    dtype, on the queries' device), ``chunk_size`` keys at a time: similarities (Q, k') float32,
    descending, and indices (Q, k') int64, k' = min(k, M)."""
    block = chunk_size or len(keys)
    best_values = queries.new_empty(len(queries), 0)
    best_indices = torch.empty(len(queries), 0, dtype=torch.int64, device=queries.device)
    for start in range(0, len(keys), block):
        similarities = queries @ keys[start : start + block].float().T
        values, indices = similarities.topk(min(k, similarities.shape[1]), dim=1)
        values = torch.cat([best_values, values], dim=1)
        indices = torch.cat([best_indices, indices + start], dim=1)
        best_values, order = values.topk(min(k, values.shape[1]), dim=1)
        best_indices = indices.gather(1, order)
    return best_values, best_indices


def patch_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    soft_labels: torch.Tensor,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """(Q, K) float32 class scores (rows summing to 1, on ``keys``' device) of (Q, C) ``queries``
    (normalised here) from their nearest memory patches: ``keys`` (M, C) L2-normalised, on the
    device where the search runs; ``soft_labels`` (M, K), on the same device."""
    queries = F.normalize(queries.to(keys.device).float(), dim=1)
    similarities, indices = nearest_neighbours(queries, keys, k, chunk_size)
    weights = torch.softmax(similarities / temperature, dim=1)
    return torch.einsum("qk,qkc->qc", weights, soft_labels[indices].float())


def query_batches(data: DenseFeatures, chunk_size: int | None) -> list[torch.Tensor]:
    """Image indices in batches of one grid size and about ``chunk_size`` patches (>= 1 image)."""
    batches: list[torch.Tensor] = []
    for group in data.groups():
        h, w = (int(v) for v in data.grid_sizes[group[0]])
        per_batch = max(1, chunk_size // (h * w)) if chunk_size else len(group)
        batches.extend(group.split(per_batch))
    return batches


@torch.no_grad()
def knn_predict_scores(
    train: DenseFeatures,
    val: DenseFeatures,
    options: KnnSegOptions | None = None,
    device: torch.device | str = "cpu",
) -> SegmentationScores:
    """Score ``val`` by dense retrieval from a memory of ``train``, searching on ``device``."""
    options = options or KnnSegOptions()
    check_compatible(train, val)
    keys, soft_labels = build_memory(train, options.memory_per_image, options.seed)
    if len(keys) == 0:
        raise ValueError("no training patch has a scored pixel: the k-NN memory is empty")
    keys, soft_labels = keys.to(device), soft_labels.to(device)
    chunk_size = options.chunk_size
    confusion = torch.zeros(val.num_classes, val.num_classes, dtype=torch.int64, device=device)
    for indices in progress(query_batches(val, chunk_size), "k-NN search", unit="chunk"):
        features, labels = val.group_batch(indices)
        batch, channels, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, channels)
        scores = patch_scores(
            queries, keys, soft_labels, options.k, options.temperature, chunk_size
        )
        scores = scores.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        # Upsample a few images at a time: (B, K, H, W) floats are large for many classes.
        for part, part_labels in zip(scores.split(8), labels.split(8), strict=True):
            part_labels = part_labels.to(device)
            upsampled = F.interpolate(
                part, size=part_labels.shape[-2:], mode="bilinear", align_corners=False
            )
            pred = upsampled.argmax(1)
            confusion += confusion_matrix(pred, part_labels, val.num_classes, val.ignore_index)
    return SegmentationScores.from_confusion(confusion, val.class_names)


def knn_seg(
    backbone: nn.Module,
    train_set: SegmentationDataset | DenseFeatures,
    val_set: SegmentationDataset | DenseFeatures,
    options: KnnSegOptions | None = None,
) -> SegmentationScores:
    """Dense k-NN label retrieval from frozen features, no training: scores on ``val_set`` at the
    resized label resolution.

    Args:
        backbone: frozen feature extractor, ``forward(x)`` -> ``{"c5": (B, C, H/32, W/32), ...}``.
        train_set: labelled images forming the memory, or their :class:`DenseFeatures` (then
            ``levels``, ``image_size`` and ``cache_dir`` do not apply to it).
        val_set: same, scored.
    """
    options = options or KnnSegOptions()
    check_knn_options(options)
    device = options.probe_device(backbone)
    train = features_of(train_set, backbone, options, device)
    val = features_of(val_set, backbone, options, device)
    return knn_predict_scores(train, val, options, device)
