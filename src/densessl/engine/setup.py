"""Turning a config into the objects a run needs: data, method, schedules. No training here."""

from __future__ import annotations

import functools
import os

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from densessl import dist
from densessl.data.batch import Batch, collate_views
from densessl.data.batch_augment import augment_batch
from densessl.data.built_in import built_in_scenes
from densessl.data.data_path import open_image_source
from densessl.data.device_decode import (
    EncodedViewsTransform,
    collate_encoded,
    device_decode_unavailable,
)
from densessl.data.pretrain import MultiViewDataset
from densessl.data.proposal_store import proposal_lookup
from densessl.data.sampler import ResumableBatchSampler
from densessl.data.sources import ImageSource
from densessl.data.views import MultiViewTransform
from densessl.engine.interrupts import data_worker_signals
from densessl.engine.logging import log
from densessl.errors import ConfigError, UserError
from densessl.methods import Method, build_method
from densessl.schedules import Constant, Cosine, CosineTimesWarmup, Schedule, WarmupConstant


def resolve_precision(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (fp32, or fp64 weights and views)."""
    name = cfg.precision
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build_source(cfg: DictConfig) -> ImageSource:
    if cfg.data.path:
        # JPEGs are opened undecoded for reduced decoding and for decoding on the device.
        defer = cfg.data.reduced_decode or cfg.data.decode == "gpu"
        return open_image_source(cfg.data.path, reduced_decode=defer)
    return built_in_scenes(
        cfg.data.scenes, cfg.data.synthetic_images, cfg.data.synthetic_size, seed=cfg.seed
    )


def build_method_checked(cfg: DictConfig) -> Method:
    """``build_method(cfg)``; a backbone without the feature level the method reads (``c5``
    from a ViT) is a one-line ConfigError instead of a KeyError."""
    try:
        return build_method(cfg)
    except KeyError as err:
        if isinstance(err, UserError):  # an unknown name: its message already says what to do
            raise
        raise ConfigError(
            f"method {cfg.method.name} needs the backbone output {err.args[0]!r}, which "
            f"backbone={cfg.backbone} does not give; choose a backbone that does "
            "(ResNets give c2..c5, ViTs give patch)"
        ) from err


def steps_per_epoch(cfg: DictConfig, dataset_size: int) -> int:
    return max(1, dataset_size // cfg.batch_size)


def total_steps(cfg: DictConfig, dataset_size: int) -> int:
    if cfg.steps:
        return int(cfg.steps)
    return max(1, round(cfg.epochs * steps_per_epoch(cfg, dataset_size)))


def micro_batch(cfg: DictConfig) -> int:
    """Per-process samples in one forward pass."""
    world = dist.world_size()
    if cfg.batch_size % (world * cfg.accum_steps):
        raise ConfigError(
            f"batch_size {cfg.batch_size} must be divisible by processes ({world}) "
            f"x accum_steps ({cfg.accum_steps})"
        )
    return cfg.batch_size // (world * cfg.accum_steps)


def optim_schedules(cfg: DictConfig, epoch_steps: int) -> dict[str, Schedule]:
    """The run's lr (linear scaling rule: base_lr per 256 images) and weight-decay schedules."""
    optim = cfg.optim
    peak_lr = optim.base_lr * cfg.batch_size / 256
    warmup = optim.warmup_steps or round(optim.warmup_epochs * epoch_steps)
    if optim.schedule == "cosine":
        lr: Schedule = Cosine(peak_lr, optim.min_lr, warmup_steps=warmup)
    elif optim.schedule == "cosine_times_warmup":
        lr = CosineTimesWarmup(peak_lr, optim.min_lr, warmup, optim.warmup_ratio)
    else:
        lr = WarmupConstant(peak_lr, warmup)
    if optim.weight_decay_end is None:
        return {"lr": lr, "weight_decay": Constant(optim.weight_decay)}
    return {"lr": lr, "weight_decay": Cosine(optim.weight_decay, optim.weight_decay_end)}


def _collate(samples: list, augment_in_worker: bool) -> Batch:
    batch = collate_views(samples)
    return augment_batch(batch) if augment_in_worker else batch


def decode_on_device(cfg: DictConfig, method: Method, device: torch.device) -> bool:
    """Whether JPEGs are decoded on the device (``data.decode=gpu``, a folder of images, a
    plain multi-view transform, nvJPEG working); when asked for and impossible, one log line
    says why and the CPU path is used."""
    if cfg.data.decode != "gpu":
        return False
    reason = device_decode_unavailable(device)
    if reason is None and not cfg.data.path:
        reason = "the built-in scenes are not JPEG files"
    if reason is None and type(method.make_transform()) is not MultiViewTransform:
        reason = f"{cfg.method.name} cuts its views with its own transform"
    if reason is not None:
        log.info("data.decode=gpu: %s; decoding on the CPU in the data workers", reason)
    return reason is None


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers are processes already; threads would oversubscribe
    data_worker_signals()


def loader_workers(asked: int) -> int:
    """``data.workers``, at most the cores this process may run on: more loader processes than
    cores only contend with the training threads (and PyTorch warns of a slow or frozen loader).
    Each sample's augmentation is seeded by its index, so the count never changes the batches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(asked, cores or 1)
    if workers < asked:
        log.info("data.workers=%d: this machine has %d cores for the run, using %d", asked,
                 cores, workers)  # fmt: skip
    return workers


def build_loader(
    cfg: DictConfig,
    source: ImageSource,
    method: Method,
    device: torch.device,
    start_micro_batch: int,
) -> DataLoader:
    """Batches of the method's views for this process, from ``start_micro_batch`` on."""
    workers = loader_workers(int(cfg.data.workers))
    proposals = proposal_lookup(source, cfg.out, workers) if method.needs_proposals else None
    on_device = cfg.data.augment_on == "device" or (
        cfg.data.augment_on == "auto" and device.type == "cuda"
    )
    transform = method.make_transform()
    collate = functools.partial(_collate, augment_in_worker=not on_device)
    if decode_on_device(cfg, method, device):  # the photometric step follows on the device
        transform = EncodedViewsTransform(transform)
        collate = functools.partial(collate_encoded, output_sizes=transform.output_sizes)
    dataset = MultiViewDataset(source, transform, cfg.seed, proposals)
    global_micro = micro_batch(cfg) * dist.world_size()
    sampler = ResumableBatchSampler(
        len(dataset), global_micro, dist.rank(), dist.world_size(), cfg.seed, start_micro_batch
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
