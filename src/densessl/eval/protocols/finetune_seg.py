"""``densessl eval finetune-seg``: fine-tune a segmenter from the weights on a labelled subset,
over seeds, compared with other inits trained the same way."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from densessl.errors import ConfigError
from densessl.eval.protocols.base import EvalProtocol, Flag
from densessl.eval.protocols.inputs import (
    LAYOUTS,
    check_layout,
    options,
    segmentation_sets,
    warn_missing_classes,
)
from densessl.registry import EVAL_PROTOCOLS


def evaluate(
    weights: str | Path,
    data: str | Path | None = None,
    *,
    compare: Sequence[str] = (),
    labels: Sequence[str] = ("100%",),
    seeds: int = 1,
    format: str | None = None,
    split: str = "val",
    train_split: str = "train",
    backbone: str | None = None,
    network: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    work_dir: str | Path | None = None,
    **named: Any,
):
    """Fine-tune a segmenter from ``weights`` (and from each ``compare`` init) on a labelled
    subset, over seeds, and compare: ``Comparison`` (``format_table()``, ``to_dict()``,
    ``plot(path)``).

    Args:
        weights: run folder, checkpoint or exported file: the first row of the comparison.
        data: labelled folder; None = the built-in scenes (held-out seeds).
        compare: other inits: ``"random"`` (the same architecture, random weights) or files.
        labels: label fractions or counts (``"10%"``, ``"37"``) of the training split.
        seeds: seeds 0 .. seeds-1; each draws the subset, the decoder init and the crops.
        work_dir: keeps each fine-tune's state (``<init>-labels<spec>-seed<N>.pt``): the same
            command run again continues the interrupted ones and only scores the finished ones.
        **named: any ``FinetuneSegOptions`` field (``decoder``, ``iterations``, ``lr`` ...).
    """
    from dataclasses import asdict, replace

    from densessl.eval.compare import Comparison, run_comparison
    from densessl.eval.finetune_seg import FinetuneSegOptions
    from densessl.eval.finetune_seg import finetune_seg as finetune
    from densessl.eval.labels import Subset, label_count, label_subset
    from densessl.eval.weights import load_backbone

    opts = options(FinetuneSegOptions, config, named, overrides)
    opts.check()
    check_layout(format)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    train, val = segmentation_sets(data, format, split, train_split, opts.image_size or 128)
    labels = list(dict.fromkeys(labels))
    for spec in labels:
        label_count(spec, len(train))  # refused before anything is trained
    sources = init_sources(weights, compare)
    if "pixels" in sources.values():
        raise ConfigError("pixels has no network to fine-tune; compare it with eval linear-seg")
    first = load_backbone(weights, backbone, network)
    arch = backbone or getattr(first, "arch", None)
    for source in list(sources.values())[1:]:  # every init loads before the first run
        load_backbone(source, arch if source == "random" else backbone, network)
    if opts.decoder != "linear":
        from densessl.eval.segmenter import build_segmenter

        build_segmenter(first, opts.decoder, train.num_classes, 0)  # a decoder that fits
    warned: set[tuple[str, int]] = set()

    def score(init: str, spec: str, seed: int) -> tuple[float, list[str]]:
        source = sources[init]
        model = load_backbone(source, arch if source == "random" else backbone, network)
        indices = label_subset(len(train), spec, seed)
        if (spec, seed) not in warned:
            warned.add((spec, seed))
            warn_missing_classes(Subset(train, indices), spec, seed)
        state = None if work_dir is None else Path(work_dir) / state_name(init, spec, seed)
        result = finetune(model, train, val, replace(opts, seed=seed), indices, state_file=state)
        return result.scores.miou, result.train_images

    comparison = Comparison(
        protocol=f"finetune-seg ({opts.decoder})",
        inits=list(sources),
        sources=sources,
        labels=labels,
        train_images=len(train),
        details={
            "iterations": {spec: opts.length(label_count(spec, len(train))) for spec in labels},
            "options": asdict(opts),
        },
    )
    return run_comparison(comparison, range(seeds), score)


def state_name(init: str, labels: str, seed: int) -> str:
    """The state file of one fine-tune in ``--work-dir``."""
    return f"{init}-labels{labels.replace('%', 'pct')}-seed{seed}.pt"


def init_sources(weights: str | Path, compare: Sequence[str]) -> dict[str, str]:
    """Row name -> weights: the user's first, then each ``compare`` entry (names unique)."""
    sources: dict[str, str] = {}
    for source in [str(weights), *map(str, compare)]:
        name = "random" if source == "random" else (Path(source).stem or source)
        while name in sources:
            name += "'"
        sources[name] = source
    return sources


FLAGS = (
    Flag("--data", "labelled folder; default: the built-in scenes"),
    Flag("--format", f"dataset layout: {', '.join(LAYOUTS)} (default: detected)"),
    Flag("--split", "split to score", default="val"),
    Flag("--train-split", "split the labels come from", default="train"),
    Flag(
        "--labels",
        "shares (10%%) or counts (37) of the training split; several give a curve (default: 100%%)",
        nargs="+",
        default=["100%"],
    ),
    Flag(
        "--compare",
        "other inits trained the same way: random, or weights files (default: none)",
        nargs="+",
        default=[],
    ),
    Flag("--seeds", "seeds 0..N-1 per init and fraction", type=int, default=1),
    Flag("--decoder", "fpn (default), unet, or linear (for ViTs)"),
    Flag("--iterations", "steps (default: 80 epochs of the labels)", type=int),
    Flag("--batch-size", "crops per step (default 8)", type=int),
    Flag("--crop-size", "training crop side (default 256)", type=int),
    Flag("--image-size", "shorter side (default: as stored)", type=int),
    Flag("--lr", "peak AdamW learning rate (default 0.001)", type=float),
    Flag("--workers", "data-loading processes (default 2)", type=int),
    Flag("--plot", "PNG of mIoU against the labels (default: none)"),
    Flag(
        "--work-dir",
        "keep each fine-tune's state here: the same command again continues interrupted "
        "fine-tunes and only scores finished ones (default: none)",
    ),
)


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    return {f.dest: getattr(args, f.dest) for f in FLAGS if f.dest not in ("data", "plot")}


def checks(args: argparse.Namespace) -> None:
    from densessl.runs import refuse_run_file

    if args.plot:
        refuse_run_file(Path(args.plot))
    if args.work_dir:
        refuse_run_file(Path(args.work_dir) / "state.pt")


def report(comparison: Any, args: argparse.Namespace) -> None:
    """The comparison table, the curve with several label fractions, ``--json``."""
    print(comparison.format_table())
    if args.plot and len(args.labels) > 1:
        print(f"wrote {comparison.plot(Path(args.plot))}")
    if args.json:
        print(f"wrote {comparison.write_json(Path(args.json))}")


EVAL_PROTOCOLS.register("finetune-seg")(
    EvalProtocol(
        "finetune-seg",
        "fine-tune a segmenter from the weights, on few labels, compared with other inits",
        "Fine-tune the whole network (the backbone under a fresh FPN or Unet decoder) on a "
        "labelled subset of the training split, score mIoU on the validation split, and compare "
        "inits with the same recipe, subsets and seeds. Example: densessl eval finetune-seg "
        "--weights runs/mine --data DIR --labels 10% --compare random --seeds 3",
        FLAGS,
        evaluate,
        keywords=keywords,
        checks=checks,
        report=report,
    )
)
