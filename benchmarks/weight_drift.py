"""How far pretraining moved a ResNet backbone from its initial weights, stage by stage
(densessl.eval.drift), for finished runs; each run's initial weights are rebuilt from its own
config and seed (densessl.runs.initial_method).

    python benchmarks/weight_drift.py runs/heldout/runs/*_s0
"""

from __future__ import annotations

import argparse

from densessl.eval.drift import run_drift

STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of ResNet runs")
    args = parser.parse_args()
    print("| run | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for run in args.runs:
        stages = run_drift(run)
        cells = [f"{stages[s].cosine:.3f} ({stages[s].change:.2f})" for s in STAGES]
        print(f"| {run} | " + " | ".join(cells) + " |")
    print("each cell: mean cosine to the initial filters (mean relative change)")


if __name__ == "__main__":
    main()
