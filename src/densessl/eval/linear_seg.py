"""Linear segmentation probe on frozen dense features (DINOv2 "BNHead" style).

``BatchNorm2d(C)`` then a 1x1 ``Conv2d(C, num_classes)`` on the feature grid, logits upsampled
bilinearly to the labels, cross-entropy skipping ``ignore_index``; features extracted once, no
augmentation. Defaults: AdamW, lr 1e-2 cosine to 0, wd 1e-4, batch 16, 20 epochs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densessl.device import module_device
from densessl.eval.features import DenseFeatures, FeatureOptions, check_compatible, features_of
from densessl.eval.metrics import SegmentationScores, confusion_matrix
from densessl.eval.segmentation import SegmentationDataset
from densessl.progress import progress


@dataclass
class LinearSegOptions(FeatureOptions):
    """The linear probe's options: feature extraction (:class:`FeatureOptions`) and training
    (``epochs``; AdamW peak ``lr``, cosine to 0; ``weight_decay``)."""

    epochs: int = 20
    lr: float = 1e-2
    weight_decay: float = 1e-4


def linear_head(channels: int, num_classes: int) -> nn.Sequential:
    """BatchNorm2d(C) + Conv2d(C, num_classes, 1): (B, C, h, w) -> (B, num_classes, h, w)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.Conv2d(channels, num_classes, 1))


def upsampled_logits(head: nn.Module, features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) features -> (B, num_classes, H, W) logits, bilinear to ``size`` = (H, W)."""
    logits = head(features.float())
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def shuffled_batches(
    data: DenseFeatures, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """One epoch of image indices, each batch drawn from images of a single grid size."""
    batches: list[torch.Tensor] = []
    for group in data.groups():
        order = group[torch.randperm(len(group), generator=generator)]
        batches.extend(order.split(batch_size))
    for b in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[b]


def train_head(
    data: DenseFeatures, options: LinearSegOptions, device: torch.device | str = "cpu"
) -> nn.Sequential:
    """Fit a linear head to features (N, C, h, w) and labels (N, H, W); returned in eval mode
    on ``device``."""
    batch_size, epochs = options.batch_size, options.epochs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        head = linear_head(data.channels, data.num_classes).to(device)
    generator = torch.Generator().manual_seed(options.seed)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    steps_per_epoch = sum(-(-len(g) // batch_size) for g in data.groups())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    head.train()
    bar = progress(range(epochs), "linear probe", unit="epoch")
    for _ in bar:
        total, count = 0.0, 0
        for indices in shuffled_batches(data, batch_size, generator):
            features, labels = data.group_batch(indices)
            if features.shape[0] * features.shape[2] * features.shape[3] < 2:
                continue  # BatchNorm needs two values per channel to train
            features, labels = features.to(device), labels.to(device=device, dtype=torch.int64)
            logits = upsampled_logits(head, features, labels.shape[-2:])
            loss = F.cross_entropy(logits, labels, ignore_index=data.ignore_index)
            if torch.isfinite(loss):  # a batch of only ignore pixels gives NaN: skip it
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            schedule.step()
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
    return head.eval()


@torch.no_grad()
def evaluate_head(head: nn.Module, data: DenseFeatures, batch_size: int) -> SegmentationScores:
    """mIoU and pixel accuracy of a head's argmax at the label resolution."""
    device = module_device(head)
    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64, device=device)
    for group in data.groups():
        for indices in group.split(batch_size):
            features, labels = data.group_batch(indices)
            labels = labels.to(device)
            pred = upsampled_logits(head, features.to(device), labels.shape[-2:]).argmax(1)
            confusion += confusion_matrix(pred, labels, data.num_classes, data.ignore_index)
    return SegmentationScores.from_confusion(confusion, data.class_names)


def linear_seg(
    backbone: nn.Module,
    train_set: SegmentationDataset | DenseFeatures,
    val_set: SegmentationDataset | DenseFeatures,
    options: LinearSegOptions | None = None,
) -> SegmentationScores:
    """Train a linear per-pixel probe on frozen features of ``train_set``, score it on ``val_set``
    (at the resized label resolution).

    Args:
        backbone: frozen feature extractor, ``forward(x)`` -> ``{"c5": (B, C, H/32, W/32), ...}``.
        train_set: labelled images, or their :class:`DenseFeatures` (then ``levels``,
            ``image_size`` and ``cache_dir`` do not apply to it).
        val_set: same, for scoring; must share the training set's classes.
    """
    options = options or LinearSegOptions()
    device = options.probe_device(backbone)
    train = features_of(train_set, backbone, options, device)
    val = features_of(val_set, backbone, options, device)
    check_compatible(train, val)
    head = train_head(train, options, device)
    return evaluate_head(head, val, options.batch_size)
