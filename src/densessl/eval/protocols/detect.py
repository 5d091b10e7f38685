"""``densessl eval detect``: fine-tune torchvision Faster / Mask R-CNN from the weights, COCO AP."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from densessl.eval.protocols.base import EvalProtocol, Flag
from densessl.eval.protocols.inputs import options
from densessl.registry import EVAL_PROTOCOLS


def evaluate(
    weights: str | Path,
    data: str | Path | None = None,
    *,
    backbone: str | None = None,
    network: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    **named: Any,
):
    """Fine-tune torchvision Faster/Mask R-CNN and score COCO AP: ``DetectionScores``.

    Args:
        weights, backbone, network: as :func:`densessl.api.knn_seg`.
        data: COCO-format folder; None = the built-in scenes written to runs/synthetic_coco.
        **named: any ``DetectOptions`` field (``model``, ``iterations``, ``lr``, ``norm``,
            ``heads``, ``device`` ...).
    """
    from densessl import dist
    from densessl.device import resolve_device
    from densessl.eval.detection import (
        DetectOptions,
        finetune_detector,
        load_detection_weights,
        write_synthetic_coco,
    )

    opts = options(DetectOptions, config, named, overrides)
    model, heads = load_detection_weights(weights, backbone, network)
    if heads and opts.heads == "v1":  # v1 has no BN in its FPN: the weights do not fit
        print(f"--heads v1: the {len(heads)} pretrained FPN/box-head tensors are not used")
        heads = {}
    if dist.launched_by_torchrun():  # every rank fine-tunes its share (DDP)
        dist.init(resolve_device(opts.device).type)
    if data is None:
        data = write_synthetic_coco("runs/synthetic_coco", num_images=200, image_size=128)
    return finetune_detector(model, data, opts, heads)


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    values = {f.dest: getattr(args, f.dest) for f in FLAGS if f.dest not in ("data", "min_size")}
    values["min_size"] = None if args.min_size is None else [args.min_size]
    return values


FLAGS = (
    Flag("--data", "COCO-format folder; default: written built-in scenes"),
    Flag("--model", "default faster_rcnn", choices=("faster_rcnn", "mask_rcnn")),
    Flag("--iterations", "default: 12 epochs (detectron2's 1x)", type=int),
    Flag("--batch-size", "images per step, all processes (default 2)", type=int),
    Flag("--lr", "default: 0.02 x batch / 16", type=float),
    Flag(
        "--norm",
        "trunk norms: SyncBN (the SSL protocol, default), frozen, or per-process BN",
        choices=("sync", "frozen", "bn"),
    ),
    Flag(
        "--heads",
        "torchvision head layout: v2 (BN FPN, 4conv1fc box head) starts from a "
        "pretrained FPN/box head (SoCo); auto (default) = v2 when --weights has them, else v1",
        choices=("auto", "v1", "v2"),
    ),
    Flag("--min-size", "short side of the input (default 800)", type=int),
    Flag("--max-size", "cap on the long side (default 1333)", type=int),
    Flag("--workers", "data-loading processes (default 2)", type=int),
    Flag(
        "--labels",
        "share (10%%) or count (37) of the train images to learn from, drawn by "
        "seed=N (default: all)",
    ),
)
EVAL_PROTOCOLS.register("detect")(
    EvalProtocol(
        "detect",
        "fine-tune torchvision Faster/Mask R-CNN, COCO AP",
        "Fine-tune torchvision Faster/Mask R-CNN with the pretrained backbone and report COCO AP.",
        FLAGS,
        evaluate,
        keywords=keywords,
    )
)
