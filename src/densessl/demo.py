"""``make demo``: pretrain DenseCL on the built-in scenes on CPU, export, plot the loss.

Writes RUN/checkpoints/last.pt, RUN/resnet18_densecl_torchvision.pt and RUN/loss.png. The recipe
is configs/densecl_r18_synthetic_demo.yaml: the paper's method at demo scale (ResNet-18, 96 px
views, a queue of 4096), sized to finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from densessl.config import build_config
from densessl.engine.train import train
from densessl.export import export
from densessl.viz import plot_loss_curves

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "densecl_r18_synthetic_demo.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    run_dir = out / "densecl"
    overrides = [f"out={run_dir}"] + ([f"steps={args.steps}"] if args.steps else [])
    cfg = build_config("densecl", RECIPE, overrides=overrides)
    train(cfg)
    weights = export(run_dir, "torchvision", out / "resnet18_densecl_torchvision.pt")
    curve = plot_loss_curves({"DenseCL": run_dir}, out / "loss.png")
    print(f"\ncheckpoint: {run_dir / 'checkpoints' / 'last.pt'}")
    print(f"backbone (torchvision resnet18 state dict): {weights}")
    print(f"loss curve: {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
