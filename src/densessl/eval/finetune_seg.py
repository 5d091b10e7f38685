"""Fine-tuning for segmentation: the whole network, backbone and decoder, on labelled masks.

DenseCL's VOC/Cityscapes protocol with a fixed recipe, so that inits compare without tuning:
:func:`densessl.eval.segmenter.build_segmenter` (FPN by default); crops of the base size
(shorter side ``image_size``) rescaled by U[``scale_min``, ``scale_max``], ignore-padded, flipped
with p 0.5, ImageNet-normalised; AdamW, linear warm-up then ``lr * (1 - t / T) ** 0.9``,
cross-entropy skipping the ignore label, ``iterations = max(epochs * images / batch,
min_iterations)`` unless given; mIoU of every validation image at its base size (padded to a
multiple of 32). Every random choice is a function of ``seed``, so two inits at one seed see the
same crops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from densessl.console import log
from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.device import resolve_device
from densessl.engine.interrupts import StopRequests, data_worker_signals
from densessl.errors import ConfigError
from densessl.eval.finetune_state import FinetuneState, restore_rng
from densessl.eval.labels import Subset
from densessl.eval.metrics import SegmentationScores, confusion_matrix
from densessl.eval.segmentation import SegmentationDataset
from densessl.eval.segmenter import DECODERS, build_segmenter
from densessl.progress import progress

PAD_MULTIPLE = 32  # FPN and Unet halve the input five times
SAVE_EVERY_SECONDS = 300.0  # a stopped run loses at most this much work


@dataclass
class FinetuneSegOptions:
    """The fine-tuning recipe (see the module docstring).

    Attributes:
        decoder: fpn | unet (smp decoders, CNN backbones) | linear (any backbone, ViTs).
        min_iterations: the shortest run, for a handful of labelled images.
        iterations: the length in steps; 0 = from ``epochs``.
        image_size: shorter side of the base size (training and scoring); None = as stored.
        precision: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16.
        device: cpu | cuda; None = cuda when available.
    """

    decoder: str = "fpn"
    epochs: float = 80.0
    min_iterations: int = 100
    iterations: int = 0
    batch_size: int = 8
    crop_size: int = 256
    scale_min: float = 0.5
    scale_max: float = 2.0
    image_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iterations: int = 20
    precision: str = "auto"
    device: str | None = None
    workers: int = 2
    seed: int = 0

    def length(self, images: int) -> int:
        """Optimizer steps for ``images`` labelled images."""
        if self.iterations:
            return self.iterations
        return max(self.min_iterations, math.ceil(self.epochs * images / self.batch_size))

    def check(self) -> None:
        """Refuse values that cannot be meant (one line naming the key)."""
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder={self.decoder!r} is not one of {', '.join(DECODERS)}")
        for key in ("batch_size", "crop_size", "min_iterations"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: give at least 1")
        if self.iterations < 0 or self.epochs <= 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                "iterations must be 0 or more, epochs and lr positive, weight_decay 0 or more"
            )
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(
                f"scale range [{self.scale_min}, {self.scale_max}]: need 0 < min <= max"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r} is not one of auto, fp32, bf16")


@dataclass
class FinetuneResult:
    """One fine-tuning run: its validation scores and what it trained on.

    Attributes:
        train_images: descriptions (paths) of the labelled images it learnt from.
        final_loss: the mean training loss of the last 10% of steps.
        model: the fine-tuned network, in eval mode.
    """

    scores: SegmentationScores
    iterations: int
    train_images: list[str] = field(default_factory=list)
    final_loss: float = math.nan
    model: nn.Module | None = None


def _base_size(image: Image.Image, image_size: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side ``image_size`` (None: the stored size)."""
    width, height = image.size
    if image_size is None:
        return width, height
    scale = image_size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> (3, H, W) float, ImageNet-normalised."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (array - mean) / std


class TrainingCrops:
    """Map-style dataset: position ``k`` -> one augmented (image, labels) crop, drawn from
    ``(seed, k)`` alone so the run does not depend on the number of loader processes."""

    def __init__(self, dataset: SegmentationDataset, options: FinetuneSegOptions) -> None:
        self.dataset = dataset
        self.options = options
        self.ignore_index = dataset.ignore_index

    def image_order(self, samples: int) -> np.ndarray:
        """Which image each of ``samples`` positions shows: shuffled passes over the set."""
        rng = np.random.default_rng([self.options.seed, 0])
        passes = -(-samples // len(self.dataset))
        return np.concatenate([rng.permutation(len(self.dataset)) for _ in range(passes)])

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        position, index = key
        o = self.options
        rng = np.random.default_rng([o.seed, 1, position])
        image, labels = self.dataset[index]
        width, height = _base_size(image, o.image_size)
        scale = rng.uniform(o.scale_min, o.scale_max)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.BILINEAR)
        labels = Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST)
        x, y = _to_tensor(image), torch.from_numpy(np.asarray(labels, dtype=np.int64))
        return self._crop(x, y, rng)

    def _crop(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator):
        """A random ``crop_size`` square (padded where the image is smaller), randomly flipped."""
        crop = self.options.crop_size
        pad_h, pad_w = max(0, crop - x.shape[1]), max(0, crop - x.shape[2])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            y = F.pad(y, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(rng.integers(0, x.shape[1] - crop + 1))
        left = int(rng.integers(0, x.shape[2] - crop + 1))
        x, y = x[:, top : top + crop, left : left + crop], y[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


def _loader(crops: TrainingCrops, iterations: int, workers: int, start: int = 0) -> DataLoader:
    """Batches of crops for steps ``start`` .. ``iterations - 1``, in the seed's order."""
    batch = crops.options.batch_size
    order = crops.image_order(iterations * batch)
    keys = [[(k, int(order[k])) for k in range(i * batch, (i + 1) * batch)]
            for i in range(start, iterations)]  # fmt: skip
    return DataLoader(crops, batch_sampler=keys, num_workers=workers, persistent_workers=False,
                      worker_init_fn=_worker_signals)  # fmt: skip


def _worker_signals(worker_id: int) -> None:
    """Ctrl-C reaches the loader's workers too; they serve the step the trainer finishes."""
    data_worker_signals()


def _autocast(options: FinetuneSegOptions, device: torch.device):
    dtype = None
    if options.precision == "bf16" or (options.precision == "auto" and device.type == "cuda"):
        dtype = torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def learning_rate(options: FinetuneSegOptions, step: int, total: int) -> float:
    """Linear warm-up to ``lr``, then ``lr * (1 - t / T) ** 0.9`` (t counted after warm-up)."""
    warmup = min(options.warmup_iterations, max(total - 1, 0))
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress_ = (step - warmup) / max(total - warmup, 1)
    return options.lr * (1.0 - progress_) ** 0.9


def train_segmenter(
    model: nn.Module, train_set: SegmentationDataset, options: FinetuneSegOptions,
    device: torch.device, state: FinetuneState | None = None,
    save_every_seconds: float = SAVE_EVERY_SECONDS,
) -> tuple[int, float]:  # fmt: skip
    """Fine-tune ``model`` on ``train_set``; returns the steps run and the final mean loss.

    With ``state``, the run continues from its saved state, saves it every
    ``save_every_seconds`` and when stopped, and leaves its final weights there. Ctrl-C or
    SIGTERM ends the run at a step boundary (KeyboardInterrupt); a second one at once.
    """
    total = options.length(len(train_set))
    crops = TrainingCrops(train_set, options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay)  # fmt: skip
    start, losses, rng = state.load(model, optimizer) if state else (0, [], None)
    batches = iter(_loader(crops, total, options.workers, start))
    if rng is not None:  # after the iterator, whose workers' seed is a draw from torch's RNG
        restore_rng(rng)
    model.train()
    bar = progress(total=total, desc="fine-tune", unit="step", initial=start)
    started = saved = time.perf_counter()
    with StopRequests() as stop:
        for step, (x, y) in enumerate(batches, start):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(options, step, total)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(options, device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=train_set.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):  # a batch of only ignore pixels gives NaN: skip it
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            rate = (step + 1 - start) * options.batch_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            done = step + 1
            if done < total and (stop.requested or (
                    state and time.perf_counter() - saved >= save_every_seconds)):  # fmt: skip
                if state:
                    state.save(done, model, optimizer, losses)
                    saved = time.perf_counter()
                if stop.requested:
                    bar.close()
                    _interrupted(done, total, state)
    bar.close()
    if state and start < total:
        state.save(total, model, None, losses)
    tail = losses[-max(1, len(losses) // 10) :]
    return total, float(np.mean(tail)) if tail else math.nan


def _interrupted(step: int, total: int, state: FinetuneState | None) -> None:
    """End an interrupted fine-tune with one line (exit code 130 at the command line)."""
    where = (f"state saved to {state.path} (run the same command to continue)" if state
             else "give --work-dir DIR to keep the state of an interrupted fine-tune")  # fmt: skip
    log.warning("fine-tune interrupted at step %d of %d; %s", step, total, where)
    raise KeyboardInterrupt


@torch.no_grad()
def score_segmenter(
    model: nn.Module, val_set: SegmentationDataset, options: FinetuneSegOptions,
    device: torch.device,
) -> SegmentationScores:  # fmt: skip
    """mIoU of ``model`` on every image of ``val_set`` at its base size, against its labels."""
    model.eval()
    classes = val_set.num_classes
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    for i in progress(range(len(val_set)), "scoring", unit="image"):
        image, labels = val_set[i]
        size = _base_size(image, options.image_size)
        x = _to_tensor(image.resize(size, Image.BILINEAR) if size != image.size else image)
        height, width = x.shape[1:]
        x = F.pad(x, (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE))[None].to(device)
        with _autocast(options, device):
            logits = model(x)
        logits = logits.float()[..., :height, :width]
        logits = F.interpolate(logits, size=labels.shape, mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].cpu()
        confusion += confusion_matrix(pred, torch.from_numpy(labels), classes,
                                      val_set.ignore_index)  # fmt: skip
    return SegmentationScores.from_confusion(confusion, val_set.class_names)


def finetune_seg(
    backbone: nn.Module,
    train_set: SegmentationDataset,
    val_set: SegmentationDataset,
    options: FinetuneSegOptions | None = None,
    train_indices: Sequence[int] | None = None,
    state_file: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune ``backbone`` with a fresh decoder on ``train_set`` (or its ``train_indices``),
    score it on ``val_set``.

    Args:
        backbone: the pretrained (or random) backbone; copied (smp decoders) or used (``linear``).
        train_indices: the labelled subset (:func:`densessl.eval.labels.label_subset`).
        state_file: where the run keeps its state (:mod:`densessl.eval.finetune_state`): an
            interrupted run continues from it, a finished one leaves its final weights there.
    """
    options = options or FinetuneSegOptions()
    options.check()
    if list(train_set.class_names) != list(val_set.class_names):
        raise ConfigError("the training and validation splits have different classes")
    labelled = Subset(train_set, train_indices if train_indices is not None
                      else range(len(train_set)))  # fmt: skip
    device = resolve_device(options.device or "auto")
    model = build_segmenter(backbone.cpu(), options.decoder, train_set.num_classes, options.seed)
    names = [labelled.describe(i) for i in range(len(labelled))]
    state = None if state_file is None else FinetuneState.of_run(state_file, options, names, model)
    model.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)  # dropout and the like, should a decoder have them
        steps, loss = train_segmenter(model, labelled, options, device, state)
    scores = score_segmenter(model, val_set, options, device)
    return FinetuneResult(scores, steps, names, loss, model)
