"""Real-data transfer: pretrain from scratch on CamVid's training images, probe on its labels.

Each method pretrains a backbone from random init on the CamVid training images (labels unused)
with the same fixed budget; the frozen backbones (and a random-init baseline) are then scored
with the linear segmentation probe and the dense k-NN retrieval, both fitted on the training
labels and scored on the validation split (11 classes, void ignored).

    python benchmarks/camvid_transfer.py --data ../shared/data/camvid --steps 300
    python benchmarks/camvid_transfer.py --data ../shared/data/camvid --steps 300 \
        --methods dino:vit_tiny_patch16,selfpatch:vit_tiny_patch16

A method may name its backbone after a colon (default ``--backbone``); every backbone used gets
a random-init row. ``--methods pixels`` adds the raw-pixel baseline (a probe on the RGB patches
themselves, :mod:`densessl.eval.raw_pixels`). Runs already in ``--out`` are reused, so rows can
be added later; the JSON file accumulates the rows of every invocation and is rewritten after
each row, so several invocations may run side by side. ``--set KEY=VALUE`` adds a config
override to every method of the invocation and ``--tag`` names the variant (e.g. ``--set
method.border=clamp --tag clamp``).

Reduced settings, the same for every method of a family: the queue is kept below one epoch of
keys (367 images; a longer queue would hold older keys of the query's own image as negatives);
DINO-style methods use 2 global crops at ``--image-size`` and 2 local crops at half that size,
with 4096-way heads instead of 65536.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

# run as a script: benchmarks/ is on sys.path
from probe_rows import miou_line, pretrain_minutes, probe_row, save_row

from densessl.config import build_config
from densessl.engine.train import train
from densessl.eval.segmentation import open_segmentation
from densessl.eval.weights import load_backbone
from densessl.methods import get_method

# Rows without pretraining: random init (of the backbone named) and the raw-pixel baseline.
BASELINES = ("random", "pixels")


def pretrain_overrides(args, method: str, backbone: str, run_dir: Path) -> list[str]:
    """The shared budget plus each family's reduced settings (see the module docstring)."""
    overrides = [
        f"out={run_dir}", f"backbone={backbone}", f"steps={args.steps}",
        f"batch_size={args.batch_size}", f"data.path={Path(args.data) / 'train'}",
        f"data.image_size={args.image_size}", f"data.workers={args.workers}", "log_every=10",
    ]  # fmt: skip
    if method in ("densecl", "mocov2"):
        overrides.append(f"method.queue_size={args.queue_size}")
    if method in ("dino", "selfpatch"):
        overrides += ["method.local_crops=2", f"method.local_crop_size={args.image_size // 2}",
                      "method.out_dim=4096"]  # fmt: skip
    return overrides + list(args.set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="CamVid folder (train/, trainannot/, val/...)"
    )
    parser.add_argument("--methods", default="densecl,mocov2")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128, help="pretraining view side")
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--probe-size", type=int, default=224, help="probe image shorter side")
    parser.add_argument("--levels", default=None, help="default: c4,c5 for ResNets, patch")
    parser.add_argument("--out", default="runs/camvid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="extra override KEY=VALUE")
    parser.add_argument("--tag", default="", help="names the variant in rows and run folders")
    args = parser.parse_args()

    out = Path(args.out)
    requested_levels = tuple(args.levels.split(",")) if args.levels else None
    train_set = open_segmentation(args.data, "camvid", "train")
    val_set = open_segmentation(args.data, "camvid", "val")
    results = out / "camvid_transfer.json"
    candidates = []
    for entry in filter(None, args.methods.split(",")):
        method, _, backbone = entry.partition(":")
        candidates.append((method, backbone or args.backbone))
    if not args.tag:  # a tagged variant compares against the untagged random rows
        for backbone in dict.fromkeys(b for _, b in candidates):
            candidates.append(("random", backbone))
    suffix = f", {args.tag}" if args.tag else ""
    for method, backbone in candidates:
        name = f"{method} ({backbone}{suffix})"
        folder = f"{method}_{backbone}" + (f"_{args.tag}" if args.tag else "")
        run_dir = None if method in BASELINES else out / folder
        if run_dir is None and results.exists() and name in json.loads(results.read_text()):
            continue  # a random-init row does not change between invocations
        if run_dir is not None and not (run_dir / "checkpoints" / "last.pt").exists():
            overrides = pretrain_overrides(args, method, backbone, run_dir)
            train(build_config(get_method(method), overrides=overrides))
        weights = str(run_dir) if run_dir else method
        model = load_backbone(weights, backbone)
        network_levels = ("c4", "c5") if backbone.startswith("resnet") else None
        levels = requested_levels or (None if method == "pixels" else network_levels)
        row = probe_row(model, train_set, val_set, list(levels) if levels else None,
                        args.probe_size)  # fmt: skip
        row.update(
            pretrain_minutes=pretrain_minutes(run_dir) if run_dir else 0.0,
            steps=args.steps if run_dir else 0,
            overrides=list(args.set),
        )
        save_row(results, name, row)
        print(miou_line(name, row), flush=True)

    rows = json.loads(results.read_text())
    print(
        f"\nmachine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {args.steps} steps x batch {args.batch_size} at "
        f"{args.image_size} px, queue {args.queue_size}; probes at {args.probe_size} px"
    )
    print("| pretraining (backbone) | steps | probe features | linear mIoU | linear pixel acc. | "
          "k-NN mIoU | k-NN pixel acc. | pretraining time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lin, knn = r["linear"], r["knn"]
        print(f"| {name} | {r['steps']} | {r['levels']} | {lin['miou']:.1f} | "
              f"{lin['pixel_accuracy']:.1f} | {knn['miou']:.1f} | {knn['pixel_accuracy']:.1f} | "
              f"{r['pretrain_minutes']} min |")  # fmt: skip


if __name__ == "__main__":
    main()
