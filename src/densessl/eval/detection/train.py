"""The detection fine-tune loop: detectron2's 1x recipe, scaled to any dataset and batch.

SGD, momentum 0.9, wd 1e-4 (none on norms), linear warm-up from 0.001x, lr x0.1 at 2/3 and 8/9
of the iterations; horizontal flips p 0.5; images without boxes skipped. Under a process group:
DDP, each rank a disjoint slice of every global batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from densessl import dist
from densessl.eval.detection.dataset import CocoDetection, detection_loader
from densessl.eval.detection.options import DetectOptions
from densessl.progress import progress

# detectron2 1x: 90k iterations at batch 16, lr 0.02, steps at 60k and 80k, 1000 warm-up steps.
EPOCHS_1X = 12
LR_PER_IMAGE = 0.02 / 16
LR_STEP_FRACTIONS = (60 / 90, 80 / 90)
LR_DECAY = 0.1
WARMUP_MAX_ITERATIONS = 1000
WARMUP_FRACTION = 0.05  # of short runs, where 1000 steps would be most of the schedule
WARMUP_START_FACTOR = 0.001
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def learning_rate(iteration: int, base_lr: float, iterations: int) -> float:
    """The lr of 0-based ``iteration``: linear warm-up, then x0.1 at 2/3 and 8/9 of the run."""
    steps = sum(iteration >= round(f * iterations) for f in LR_STEP_FRACTIONS)
    factor = LR_DECAY**steps
    warmup = min(WARMUP_MAX_ITERATIONS, max(1, int(WARMUP_FRACTION * iterations)))
    if iteration < warmup:
        alpha = iteration / warmup
        factor *= WARMUP_START_FACTOR * (1 - alpha) + alpha
    return base_lr * factor


def parameter_groups(detector: nn.Module) -> list[dict]:
    """Trainable parameters: norm ones without weight decay (detectron2's WEIGHT_DECAY_NORM)."""
    decayed, exempt = [], []
    for module in detector.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (exempt if isinstance(module, _NORM_TYPES) else decayed).append(p)
    return [
        {"params": decayed, "weight_decay": WEIGHT_DECAY},
        {"params": exempt, "weight_decay": 0},
    ]


def batch_indices(
    indices: list[int], batch_size: int, seed: int, rank: int, world: int
) -> Iterator[list[int]]:
    """This rank's share of each global batch, from an endless stream of reshuffled epochs."""
    epoch, order = 0, []
    while True:
        while len(order) < batch_size:
            # Every rank draws the same order and takes disjoint slices of each global batch.
            order += [
                indices[k] for k in np.random.default_rng([seed, epoch]).permutation(len(indices))
            ]
            epoch += 1
        chunk, order = order[:batch_size], order[batch_size:]
        yield chunk[rank::world]


def flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror (3, H, W) image, its xyxy boxes and (M, H, W) masks left-right."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"]
    target["boxes"] = torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
    )
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def _to_device(images: list, targets: list, flips: np.random.Generator, device: torch.device):
    """Randomly flipped copies of one batch on ``device`` (one flip draw per image, in order)."""
    samples = [
        flip(x, t) if flips.random() < 0.5 else (x, t) for x, t in zip(images, targets, strict=True)
    ]
    images = [x.to(device, non_blocking=True) for x, _ in samples]
    targets = [
        {k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in samples
    ]
    return images, targets


def train_detector(
    detector: nn.Module,
    dataset: CocoDetection,
    iterations: int,
    lr: float,
    device: torch.device,
    options: DetectOptions,
) -> None:
    """Fine-tune ``detector`` (on ``device``) for ``iterations`` steps of base lr ``lr``;
    ``options.batch_size`` (global), ``seed`` and ``workers`` apply. Raises FloatingPointError
    when the loss is not finite."""
    rank, world = dist.rank(), dist.world_size()
    indices = [i for i in range(len(dataset)) if dataset.num_boxes(i) > 0]
    batches = batch_indices(indices, options.batch_size, options.seed, rank, world)
    flips = np.random.default_rng([options.seed, 1, rank])
    model = detector
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(detector, device_ids=ids)
    optimizer = torch.optim.SGD(parameter_groups(detector), lr=lr, momentum=MOMENTUM)
    model.train()
    bar = progress(None, "detection fine-tune", iterations, "it")
    loader = detection_loader(dataset, batches, options.workers, device)
    for iteration, (images, targets) in zip(range(iterations), loader, strict=False):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, lr, iterations)
        losses = model(*_to_device(images, targets, flips, device))
        loss = sum(losses.values())
        value = float(loss.detach())  # one sync per iteration; detection steps are long anyway
        if not math.isfinite(value):
            raise FloatingPointError(
                f"detection loss became {value} at iteration {iteration}; lower lr ({lr})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(
            loss=f"{value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False
        )
        bar.update()
    bar.close()
