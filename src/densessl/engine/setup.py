"""Turning a config into the objects a run needs: device, data, method. No training here."""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from densessl import dist
from densessl.data.augment import apply_photometric
from densessl.data.batch import Batch, collate_views
from densessl.data.box_views import apply_box_cutout
from densessl.data.pretrain import MultiViewDataset
from densessl.data.sampler import ResumableBatchSampler
from densessl.data.sources import ImageFolder, ImageSource
from densessl.data.synthetic import SyntheticScenes
from densessl.methods import Method, MethodContext, get_method


def resolve_device(cfg: DictConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for, but CUDA is not available")
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


def resolve_precision(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    name = cfg.precision
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build_source(cfg: DictConfig) -> ImageSource:
    if cfg.data.path:
        return ImageFolder(cfg.data.path)
    return SyntheticScenes(
        num_images=cfg.data.synthetic_images, image_size=cfg.data.synthetic_size, seed=cfg.seed
    )


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
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by processes ({world}) "
            f"x accum_steps ({cfg.accum_steps})"
        )
    return cfg.batch_size // (world * cfg.accum_steps)


def build_method(cfg: DictConfig, steps: int, epoch_steps: int = 0) -> Method:
    method_cls = get_method(cfg.method.name)
    method_cfg = OmegaConf.to_object(cfg.method)
    ctx = MethodContext(
        backbone=cfg.backbone,
        total_steps=steps,
        image_size=cfg.data.image_size,
        batch_norm=cfg.batch_norm,
        seed=cfg.seed,
        steps_per_epoch=epoch_steps,
    )
    return method_cls(method_cfg, ctx)


def augment_batch(batch: Batch) -> Batch:
    """Apply each view's drawn photometric parameters (batched; CPU or GPU), then any drawn
    cutout rectangles (``extras["cutout"]``, SoCo), which zero normalised pixels."""
    if batch.augmented:
        return batch
    views = [apply_photometric(v, batch.photometric[:, i]) for i, v in enumerate(batch.views)]
    if "cutout" in batch.extras:
        cutout = batch.extras["cutout"]  # (B, V, K, 4)
        views = [apply_box_cutout(v, cutout[:, i]) for i, v in enumerate(views)]
    return replace(batch, views=views, augmented=True)


class ProposalList:
    """``lookup(i)`` -> (M, 4) xyxy source-pixel proposals of image ``i``, from a list aligned
    with the source (picklable, for data workers)."""

    def __init__(self, boxes: list) -> None:
        self.boxes = boxes

    def __call__(self, i: int):
        return self.boxes[i]


class SceneBoxes:
    """The built-in scenes' own instance boxes as proposals: annotations, so not SoCo's
    unsupervised setting; for tests that need known boxes without selective search."""

    def __init__(self, scenes: SyntheticScenes) -> None:
        self.scenes = scenes

    def __call__(self, i: int):
        return self.scenes.scene(i).boxes  # (M, 4) float32 xyxy source pixels


def proposal_lookup(cfg: DictConfig, source: ImageSource) -> ProposalList:
    """SoCo's selective-search proposals of every image, generated when missing and cached
    (beside an image folder, or in the run folder; see :mod:`densessl.data.proposal_store`).
    The main process generates them while the others wait, then every process loads the file."""
    from densessl.data.proposal_store import proposals_for_source

    workers = max(1, int(cfg.data.workers))
    if dist.is_main():
        boxes = proposals_for_source(source, cfg.out, workers=workers, progress=True)
    dist.barrier()
    if not dist.is_main():
        boxes = proposals_for_source(source, cfg.out, workers=workers, progress=False)
    return ProposalList(boxes)


def _collate(samples: list, augment_in_worker: bool) -> Batch:
    batch = collate_views(samples)
    return augment_batch(batch) if augment_in_worker else batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers are processes already; threads would oversubscribe


def build_loader(
    cfg: DictConfig,
    source: ImageSource,
    method: Method,
    device: torch.device,
    start_micro_batch: int,
) -> DataLoader:
    proposals = proposal_lookup(cfg, source) if method.needs_proposals else None
    dataset = MultiViewDataset(source, method.make_transform(), cfg.seed, proposals)
    global_micro = micro_batch(cfg) * dist.world_size()
    sampler = ResumableBatchSampler(
        len(dataset), global_micro, dist.rank(), dist.world_size(), cfg.seed, start_micro_batch
    )
    on_device = cfg.data.augment_on == "device" or (
        cfg.data.augment_on == "auto" and device.type == "cuda"
    )
    workers = int(cfg.data.workers)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=functools.partial(_collate, augment_in_worker=not on_device),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
