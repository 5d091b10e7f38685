"""Linear segmentation probe on frozen dense features (DINOv2 "BNHead" style).

The probe is ``BatchNorm2d(C)`` followed by a 1x1 ``Conv2d(C, num_classes)`` on the backbone's
feature grid; its logits are upsampled bilinearly to the label resolution (the resized image)
and trained with cross-entropy that skips ``ignore_index``. Features are extracted once, then
every epoch reads them from memory: there is no augmentation.

Defaults, chosen so that a probe on a few hundred small images takes seconds on two CPU cores
and still converges on large sets: AdamW, lr 1e-2 with a cosine decay to 0 over all steps,
weight decay 1e-4, batch 16, 20 epochs. (lr 1e-3 leaves the head under-fitted after a few hundred
steps: 84 vs 92 mIoU on the oracle features of tests/test_eval_seg.py. Leopart / DINOv2 train
for 25 epochs / 40k iterations with augmentation; slower protocols, numbers not comparable.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from densessl.data.labeled import SegmentationDataset
from densessl.eval.features import (
    DenseFeatures,
    check_compatible,
    features_of,
    module_device,
    progress,
)
from densessl.eval.metrics import SegmentationScores, confusion_matrix

DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 1e-2
DEFAULT_WEIGHT_DECAY = 1e-4


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
    data: DenseFeatures,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> nn.Sequential:
    """Fit a linear head to dense features and their labels.

    Args:
        data: training features (N, C, h, w) and labels (N, H, W).
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak AdamW learning rate (cosine decay to 0).
        weight_decay: AdamW weight decay.
        device: where the head trains.
        seed: head initialisation and batch order.

    Returns:
        The trained head, in eval mode, on ``device``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = linear_head(data.channels, data.num_classes).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
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
def evaluate_head(
    head: nn.Module, data: DenseFeatures, batch_size: int = DEFAULT_BATCH_SIZE
) -> SegmentationScores:
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
    levels: Sequence[str] | None = None,
    image_size: int = 224,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    device: torch.device | str | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> SegmentationScores:
    """Train a linear per-pixel probe on frozen features of ``train_set``, score it on ``val_set``.

    Args:
        backbone: frozen feature extractor, ``forward(x)`` -> ``{"c5": (B, C, H/32, W/32), ...}``.
        train_set: labelled images, or their :class:`DenseFeatures` (then ``levels``,
            ``image_size`` and ``cache_dir`` do not apply to it).
        val_set: same, for scoring; must share the training set's classes.
        levels: backbone outputs concatenated as features; None = the backbone's default
            (c5 for ResNets, the patch grid for ViTs).
        image_size: shorter image side (see :mod:`densessl.eval.features`).
        epochs, batch_size, lr, weight_decay: probe training (see the module docstring).
        device: where the backbone and the probe run; default: the backbone's device.
        seed: probe initialisation and batch order.
        cache_dir: optional folder caching the extracted features between runs.

    Returns:
        Validation scores at the resized label resolution.
    """
    device = torch.device(device) if device is not None else module_device(backbone)
    train = features_of(train_set, backbone, levels, image_size, batch_size, device, cache_dir)
    val = features_of(val_set, backbone, levels, image_size, batch_size, device, cache_dir)
    check_compatible(train, val)
    head = train_head(train, epochs, batch_size, lr, weight_decay, device, seed)
    return evaluate_head(head, val, batch_size)
