"""Continued pretraining on the target domain vs its starting point vs training from scratch.

The workflow the README's "Continue from your weights" describes, measured on CamVid (linear
probe and dense k-NN on the validation split, fitted on the training labels):

1. ``start``: a ResNet-18 pretrained with MoCo-v2 on the built-in synthetic scenes, standing in
   for weights from another domain (``--start-steps`` steps);
2. ``continued``: that backbone continued with DenseCL on the CamVid training images
   (``--init`` the start run, ``densecl_continue``: lower lr, short warm-up);
3. ``scratch``: DenseCL from random init on the CamVid training images, the same budget as 2;
4. ``random``: the random-init baseline.

It shows whether continuing on the target domain beats both the starting point and training
from scratch at the same CamVid budget. Runs already in ``--out`` are reused; the rows go to
``OUT/continue_camvid.json`` and a Markdown table is printed for BENCHMARKS.md.

    python benchmarks/continue_camvid.py --data ../shared/data/camvid --steps 300

Long on a CPU (three pretraining runs and four probes). ``--rows`` runs only some rows, one
invocation each, so that every job stays short on a shared machine; each invocation merges its
rows into the same JSON file (``continued`` needs the ``start`` run first):

    python benchmarks/continue_camvid.py --data ../shared/data/camvid --steps 300 --rows scratch
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

CONTINUE_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "densecl_continue.yaml"
ROWS = ("start", "continued", "scratch", "random")  # the order they run in


def common_overrides(args, run_dir: Path, steps: int) -> list[str]:
    return [
        f"out={run_dir}", f"backbone={args.backbone}", f"steps={steps}",
        f"batch_size={args.batch_size}", f"data.image_size={args.image_size}",
        f"data.workers={args.workers}", f"method.queue_size={args.queue_size}", "log_every=10",
    ]  # fmt: skip


def finished(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").exists()


def pretrain(method: str, overrides: list[str], recipe: Path | None = None) -> None:
    """Train unless the run exists (a reused run keeps its summary's time)."""
    run_dir = Path(next(o for o in overrides if o.startswith("out=")).removeprefix("out="))
    if not finished(run_dir):
        train(build_config(get_method(method), recipe, overrides=overrides))


def minutes_cell(minutes: float | None) -> str:
    return "—" if minutes is None else f"{minutes} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CamVid folder (train/, trainannot/, ...)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--start-steps", type=int, default=300, help="MoCo-v2 on the scenes")
    parser.add_argument("--steps", type=int, default=300, help="DenseCL on CamVid (both rows)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--probe-size", type=int, default=224)
    parser.add_argument("--out", default="runs/continue_camvid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}"
    )
    args = parser.parse_args()
    rows = list(dict.fromkeys(filter(None, args.rows.split(","))))
    if unknown := [r for r in rows if r not in ROWS]:
        parser.error(f"--rows: unknown row {unknown[0]!r}; choose from {','.join(ROWS)}")

    out = Path(args.out)
    camvid_train = str(Path(args.data) / "train")
    start, continued, scratch = out / "start_mocov2_scenes", out / "continued", out / "scratch"
    runs = {  # row -> (table name, method, run folder, overrides, recipe)
        "start": ("start: MoCo-v2 on the built-in scenes", "mocov2", start,
                  common_overrides(args, start, args.start_steps), None),
        "continued": ("continued: start + DenseCL on CamVid", "densecl", continued,
                      [*common_overrides(args, continued, args.steps),
                       f"data.path={camvid_train}", f"init={start}"], CONTINUE_RECIPE),
        "scratch": ("scratch: DenseCL on CamVid", "densecl", scratch,
                    [*common_overrides(args, scratch, args.steps), f"data.path={camvid_train}"],
                    None),
        "random": ("random init", None, None, [], None),
    }  # fmt: skip
    if "continued" in rows and "start" not in rows and not finished(start):
        parser.error(f"--rows continued needs the start run {start}: run --rows start first")
    train_set = open_segmentation(args.data, "camvid", "train")
    val_set = open_segmentation(args.data, "camvid", "val")
    results = out / "continue_camvid.json"
    levels = ["c4", "c5"]
    for key in [r for r in ROWS if r in rows]:  # start before continued
        name, method, run_dir, overrides, recipe = runs[key]
        if method:
            pretrain(method, overrides, recipe)
        model = load_backbone(str(run_dir) if run_dir else "random", args.backbone)
        row = probe_row(model, train_set, val_set, levels, args.probe_size)
        row.update(
            pretrain_minutes=pretrain_minutes(run_dir) if run_dir else 0.0,
            steps=(args.start_steps if key == "start" else args.steps) if method else 0,
        )
        save_row(results, name, row)
        print(miou_line(name, row), flush=True)

    print(
        f"\nmachine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; start {args.start_steps} steps, CamVid {args.steps} steps x batch "
        f"{args.batch_size} at {args.image_size} px; probes on c4+c5 at {args.probe_size} px"
    )
    print("| backbone | linear mIoU | linear pixel acc. | k-NN mIoU | k-NN pixel acc. | time |")
    print("|---|---|---|---|---|---|")
    for name, r in json.loads(results.read_text()).items():
        lin, knn = r["linear"], r["knn"]
        print(f"| {name} | {lin['miou']:.1f} | {lin['pixel_accuracy']:.1f} | {knn['miou']:.1f} | "
              f"{knn['pixel_accuracy']:.1f} | {minutes_cell(r['pretrain_minutes'])} |")  # fmt: skip


if __name__ == "__main__":
    main()
