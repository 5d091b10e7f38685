"""What the two frozen-feature probes share: their flags and their run (a backbone loaded and
frozen, a labelled subset of the training split, the validation split scored)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from densessl.errors import ConfigError
from densessl.eval.protocols.base import Flag
from densessl.eval.protocols.inputs import (
    LAYOUTS,
    check_layout,
    options,
    segmentation_sets,
    warn_missing_classes,
)

FLAGS = (
    Flag("--data", "labelled folder; default: the built-in scenes"),
    Flag("--format", f"dataset layout: {', '.join(LAYOUTS)} (default: detected)"),
    Flag("--split", "split to score", default="val"),
    Flag("--train-split", "split the probe learns from", default="train"),
    Flag("--cache-dir", "folder keeping extracted features between runs (default: none)"),
    Flag("--levels", "comma-separated feature levels (default: c5, or patch for a ViT)"),
    Flag("--image-size", "shorter image side (default 224)", type=int),
    Flag(
        "--labels",
        "share (10%%) or count (37) of the training split the probe learns from, drawn by seed=N",
        default="100%",
    ),
)


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The flags' values, ``--levels`` split at its commas."""
    values = {f.dest: getattr(args, f.dest) for f in FLAGS if f.dest != "data"}
    values["levels"] = args.levels.split(",") if args.levels else None
    return values


def frozen_scores(
    model,
    train_set,
    val_set,
    levels: list[str] | None = None,
    image_size: int = 224,
    seed: int = 0,
    probes: tuple[str, ...] = ("linear", "knn"),
) -> dict:
    """The linear probe and (or) the dense k-NN of one frozen backbone, fitted on ``train_set``
    and scored on ``val_set``: ``{"linear": SegmentationScores, "knn": ...}``. The one probe
    call the demo and the benchmarks share (each probe seeds its own draws)."""
    from densessl.eval.knn_seg import KnnSegOptions, knn_seg
    from densessl.eval.linear_seg import LinearSegOptions, linear_seg

    runs = {"linear": (linear_seg, LinearSegOptions), "knn": (knn_seg, KnnSegOptions)}
    options = dict(levels=levels, image_size=image_size, seed=seed)
    return {
        name: runs[name][0](model, train_set, val_set, runs[name][1](**options)) for name in probes
    }


def run_probe(
    schema: type,
    probe: Callable,
    weights: str | Path,
    data: str | Path | None = None,
    *,
    format: str | None = None,
    split: str = "val",
    train_split: str = "train",
    labels: str = "100%",
    backbone: str | None = None,
    network: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    **named: Any,
):
    """``probe(model, train subset, val, options)`` with options of ``schema``."""
    from densessl.device import resolve_device
    from densessl.eval.features import level_strides
    from densessl.eval.labels import Subset, label_subset
    from densessl.eval.weights import load_backbone

    opts = options(schema, config, named, overrides)
    check_layout(format)
    model = load_backbone(weights, backbone, network)
    unknown = [level for level in opts.levels or () if level not in level_strides(model)]
    if unknown:
        raise ConfigError(
            f"--levels {','.join(opts.levels)}: {getattr(model, 'arch', 'this backbone')} has no "
            f"{unknown[0]!r}; pick among {', '.join(level_strides(model))}"
        )
    model.to(resolve_device(opts.device))  # the probe runs where the backbone is
    train, val = segmentation_sets(data, format, split, train_split, opts.image_size)
    train = Subset(train, label_subset(len(train), labels, opts.seed))
    warn_missing_classes(train, labels, opts.seed)
    return probe(model, train, val, opts)
