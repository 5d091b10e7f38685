"""The run's health (:mod:`densessl.health`) every ``health_every`` steps, on a held batch.

The held batch is the first :data:`HELD_IMAGES` readable images, resized and centre-cropped to
the view size: the same pixels every check, so a change is the network's. The released network
embeds them in eval mode (global pool or ViT class token) with no gradient, random draw or
running-statistic update; training modes are restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.data.sources import ImageSource, UnreadableImage
from densessl.health import diversity_ratio, effective_rank, entropy_ratio, spread
from densessl.methods import Method, StepState

HELD_IMAGES = 64


def health_interval(health_every: int, steps_per_epoch: int) -> int:
    """Steps between checks: ``health_every``, or a quarter epoch when it is 0."""
    return health_every if health_every > 0 else max(1, steps_per_epoch // 4)


def _centre_square(image: Image.Image, side: int) -> np.ndarray:
    scale = side / min(image.size)
    width, height = max(side, round(image.width * scale)), max(side, round(image.height * scale))
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - side) // 2, (height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32)


def held_batch(source: ImageSource, side: int, count: int = HELD_IMAGES) -> torch.Tensor | None:
    """(N, 3, side, side) normalised images: the first ``count`` readable ones of ``source``
    (None when it has none: the loader then says so in its own words)."""
    pixels = []
    for i in range(len(source)):
        if len(pixels) == count:
            break
        with contextlib.suppress(UnreadableImage):
            pixels.append(_centre_square(source.load_image(i).convert("RGB"), side))
    if not pixels:
        return None
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2) / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (images - mean[:, None, None]) / std[:, None, None]


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block; each submodule's own mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def pooled(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, D) image embeddings of a backbone's outputs: a ViT's class token, else the global
    average of its deepest map (``c5`` of a ResNet, ``patch`` of a ViT without one)."""
    if "cls" in features:
        return features["cls"]
    deepest = features["c5"] if "c5" in features else list(features.values())[-1]
    return deepest.float().mean(dim=(2, 3))


@torch.no_grad()
def measure(method: Method, images: torch.Tensor, state: StepState) -> dict[str, float]:
    """``effective_rank`` and ``spread`` of the released backbone's embeddings of ``images``;
    ``teacher_entropy`` and ``teacher_diversity`` when the method has a softmax teacher;
    ``projection_spread`` when it declares its projections; {} when the embeddings are not
    finite (the loss check stops such a run, not this)."""
    with evaluating(method):
        embeddings = pooled(method.exportable()["backbone"](images))
        if not torch.isfinite(embeddings).all():
            return {}
        values = {"effective_rank": effective_rank(embeddings), "spread": spread(embeddings)}
        target = method.teacher_distribution(images, state)
        projections = method.projections(images)
    if projections is not None and torch.isfinite(projections).all():
        values["projection_spread"] = spread(projections)
    if target is not None and torch.isfinite(target).all():
        values["teacher_entropy"] = entropy_ratio(target)
        values["teacher_diversity"] = diversity_ratio(target)
    return values
