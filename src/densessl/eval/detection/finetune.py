"""Detection transfer in one call: COCO splits -> detector -> fine-tune -> COCO AP.

Under a process group every rank must call :func:`finetune_detector`; ``batch_size`` is then
global, evaluation sharded, COCOeval on rank 0. A val split without boxes raises
:class:`DataError` before training.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from densessl import dist
from densessl.device import resolve_device
from densessl.errors import DataError
from densessl.eval.detection.coco_eval import DetectionScores, coco_ap, predict
from densessl.eval.detection.dataset import CocoDetection, open_coco
from densessl.eval.detection.model import (
    HeadWidths,
    build_detector,
    has_v2_heads,
    load_extra_state,
)
from densessl.eval.detection.options import DetectOptions
from densessl.eval.detection.train import EPOCHS_1X, LR_PER_IMAGE, train_detector
from densessl.eval.labels import label_subset
from densessl.models.backbones import ResNetBackbone

log = logging.getLogger("densessl")


def _open_splits(data_root: str | Path, with_masks: bool) -> tuple[CocoDetection, CocoDetection]:
    train = open_coco(data_root, "train", with_masks=with_masks)
    # Ground-truth masks for COCOeval come from .coco; the val targets need none.
    val = open_coco(data_root, "val")
    if not any(train.num_boxes(i) for i in range(len(train))):
        raise DataError(f"the train split of {data_root} has no usable box; annotate some objects")
    if not any(val.num_boxes(i) for i in range(len(val))):
        raise DataError(
            f"the val split of {data_root} has no usable box; evaluate on one with boxes"
        )
    if val.category_ids != train.category_ids:
        raise DataError(
            f"train and val of {data_root} define different categories; give both the same list"
        )
    return train, val


def finetune_detector(
    backbone: ResNetBackbone | None,
    data_root: str | Path,
    options: DetectOptions | None = None,
    extra_state: dict[str, torch.Tensor] | None = None,
) -> DetectionScores:
    """Fine-tune a Faster / Mask R-CNN R-FPN from ``backbone`` on ``open_coco(data_root,
    "train")`` (images without boxes skipped); the ``"val"`` COCOeval scores, the same on every
    rank. DataError for a missing dataset, or a split without boxes.

    Args:
        backbone: pretrained trunk (any device; copied), or None for a random init.
        extra_state: pretrained FPN / head weights in torchvision naming
            (:func:`~densessl.eval.detection.weights.load_detection_weights`).
    """
    options = options or DetectOptions()
    world = dist.world_size()
    options.check(world)
    extra_state = extra_state or {}
    heads = options.heads
    if heads == "auto":
        heads = "v2" if has_v2_heads(extra_state) else "v1"
    device = resolve_device(options.device)
    train, val = _open_splits(data_root, with_masks=options.model == "mask_rcnn")
    train = train.subset(label_subset(len(train), options.labels, options.seed))
    if not any(train.num_boxes(i) for i in range(len(train))):
        raise DataError(
            f"--labels {options.labels} at seed {options.seed}: none of the {len(train)} "
            "images drawn holds a box; give more labels or another seed"
        )
    iterations = options.iterations
    if iterations is None:
        usable = sum(1 for i in range(len(train)) if train.num_boxes(i))
        iterations = math.ceil(EPOCHS_1X * usable / options.batch_size)
    lr = LR_PER_IMAGE * options.batch_size if options.lr is None else options.lr
    torch.manual_seed(options.seed)  # FPN / head init and torchvision's multi-scale choice
    detector = build_detector(
        backbone, train.num_classes, options.arch, options.model, options.norm,
        options.min_size, options.max_size, dict(options.detector_options), heads,
        HeadWidths.of(extra_state) if heads == "v2" else None,
    )  # fmt: skip
    used = load_extra_state(detector, extra_state) if extra_state else []
    log.info("%s heads; extra_state: loaded %d keys into the detector", heads, len(used))
    detector.to(device)
    train_detector(detector, train, iterations, lr, device, options)
    per_rank = options.batch_size // world
    box_results, mask_results = predict(detector, val, per_rank, device, options.workers)
    scores = None
    if dist.is_main():
        *box, per_class = coco_ap(val, box_results, "bbox")
        masks = options.model == "mask_rcnn"
        mask = coco_ap(val, mask_results, "segm")[:3] if masks else (None,) * 3
        scores = DetectionScores(
            *box, *mask, iterations=iterations, extra_keys_used=used, heads=heads,
            box_ap_per_class=per_class,
        )  # fmt: skip
    return dist.all_gather_objects(scores)[0]
