"""Seed spread of the CamVid comparison: the rows of one recipe, pooled over seeds.

Reads the rows that ``benchmarks/camvid_transfer.py`` wrote (one per method and run, each with
the ``--set`` overrides it ran with) and pools the runs of each method that differ only in
``seed=N`` and ran the same number of steps (``--steps``, 300 by default). Prints each method's
mean and standard deviation over seeds (``ddof=1``), the baselines (random init, raw pixels: no
seed), and the margins the issue's targets name, with the seed-paired spread of DenseCL - MoCo-v2.

    python benchmarks/camvid_seeds.py benchmarks/results/camvid_small_data.json \
        --recipe optim.base_lr=0.48 method.momentum=0.99 data.image_size=160
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def seed_of(overrides: list[str]) -> int:
    return next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("seed=")), 0)


def runs_of_recipe(rows: dict, recipe: list[str], steps: int) -> dict[str, dict[int, dict]]:
    """method -> seed -> row: the ``steps``-step rows whose overrides are ``recipe`` + a seed."""
    pooled: dict[str, dict[int, dict]] = {}
    for name, row in rows.items():
        overrides = row.get("overrides", [])
        if row.get("steps") != steps:
            continue  # a longer run of the same recipe is another comparison, not another seed
        if sorted(o for o in overrides if not o.startswith("seed=")) == sorted(recipe):
            method = name.split(" ", 1)[0]
            pooled.setdefault(method, {})[seed_of(overrides)] = row
    return pooled


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.1f} ± {sd:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="camvid_transfer.py's JSON file")
    parser.add_argument("--recipe", nargs="+", required=True, help="the overrides, no seed")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--steps", type=int, default=300, help="pool only runs of this length")
    args = parser.parse_args()
    rows = json.loads(args.rows.read_text())
    pooled = runs_of_recipe(rows, args.recipe, args.steps)
    means = {}
    print("| pretraining | seeds | linear mIoU (mean ± sd) | k-NN mIoU (mean ± sd) | "
          "per seed (linear / k-NN) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for method, by_seed in pooled.items():
        seeds = sorted(by_seed)
        lin = [by_seed[s]["linear"]["miou"] for s in seeds]
        knn = [by_seed[s]["knn"]["miou"] for s in seeds]
        means[method] = (statistics.fmean(lin), statistics.fmean(knn))
        each = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(lin, knn, strict=True))
        seed_list = ", ".join(map(str, seeds))
        print(f"| {method} | {seed_list} | {mean_sd(lin)} | {mean_sd(knn)} | {each} |")
    for baseline in ("random", "pixels"):
        row = rows[f"{baseline} ({args.backbone})"]
        means[baseline] = (row["linear"]["miou"], row["knn"]["miou"])
        print(f"| {baseline} | — | {means[baseline][0]:.1f} | {means[baseline][1]:.1f} | — |")
    print("\n| margin (difference of means) | linear | k-NN |\n|---|---|---|")
    for a, b in (("densecl", "mocov2"), ("densecl", "random"), ("mocov2", "random")):
        if a in means and b in means:
            print(f"| {a} - {b} | {means[a][0] - means[b][0]:+.1f} | "
                  f"{means[a][1] - means[b][1]:+.1f} |")  # fmt: skip
    if "densecl" in pooled and "mocov2" in pooled:
        shared = sorted(set(pooled["densecl"]) & set(pooled["mocov2"]))
        for probe in ("linear", "knn"):
            gaps = [pooled["densecl"][s][probe]["miou"] - pooled["mocov2"][s][probe]["miou"]
                    for s in shared]  # fmt: skip
            print(
                f"\nDenseCL - MoCo-v2, {probe}, paired by seed {shared}: "
                f"{', '.join(f'{g:+.1f}' for g in gaps)} -> {mean_sd(gaps)}"
            )


if __name__ == "__main__":
    main()
