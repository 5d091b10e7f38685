"""How far pretraining moved a ResNet backbone from its initial weights, stage by stage.

A run starts from ``torch.manual_seed(cfg.seed)`` then ``build_method(cfg)``
(``engine/session.py``), so its initial weights are rebuilt exactly from its own config. For every
conv weight W of the released backbone, against its initial W0:

    relative change = ||W - W0|| / ||W0||,   cosine = <W, W0> / (||W|| ||W0||)

A conv followed by batch norm computes the same function for every positive scale of W, so the
cosine, not the norm, says how much the filter changed; each stage's row is the mean over its
convs. A cosine of 1 is an untouched layer; two independent random inits have a cosine near 0.

    python benchmarks/weight_drift.py runs/heldout/runs/*_s0
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch import nn

from densessl.methods import build_method
from densessl.runs import open_run

STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def conv_weights(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Every conv weight of ``backbone`` by parameter name, detached and in float64."""
    return {
        f"{name}.weight": module.weight.detach().to(torch.float64, copy=True)
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Conv2d)
    }


def stage_of(name: str) -> str:
    """The ResNet stage a parameter name belongs to (``conv1`` is the stem)."""
    first = name.split(".")[0]
    return first if first in STAGES else "other"


def drift(initial: dict[str, torch.Tensor], final: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """Per stage: (mean relative change, mean cosine, number of convs)."""
    per_stage: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, w0 in initial.items():
        w = final[name]
        change = ((w - w0).norm() / w0.norm()).item()
        cosine = (torch.dot(w.flatten(), w0.flatten()) / (w.norm() * w0.norm())).item()
        per_stage[stage_of(name)].append((change, cosine))
    return {
        stage: (
            sum(c for c, _ in rows) / len(rows),
            sum(c for _, c in rows) / len(rows),
            len(rows),
        )
        for stage, rows in per_stage.items()
    }


def initial_backbone(cfg) -> nn.Module:
    """The backbone a run started from, rebuilt from its config and seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_method(cfg).exportable(None)["backbone"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of ResNet runs")
    args = parser.parse_args()
    print("| run | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for run in args.runs:
        method, cfg = open_run(run)
        final = conv_weights(method.exportable(None)["backbone"])
        stages = drift(conv_weights(initial_backbone(cfg)), final)
        cells = [f"{stages[s][1]:.3f} ({stages[s][0]:.2f})" if s in stages else "-" for s in STAGES]
        print(f"| {run} | " + " | ".join(cells) + " |")
    print("each cell: mean cosine to the initial weights (mean relative change)")


if __name__ == "__main__":
    main()
