"""How far training moved a network from its initial weights, stage by stage.

For each conv filter bank W against its initial W0 (flattened):

    cosine = <W, W0> / (||W|| ||W0||),   relative change = ||W - W0|| / ||W0||

A conv followed by batch norm computes the same function at every positive scale of W, so the
cosine, not the norm, says how much its filters changed: 1 is untouched, and two unrelated
random inits sit near 0. A stage is the first component of a conv's name (a ResNet's stem
``conv1``, then ``layer1`` .. ``layer4``); its row is the mean over its convs. Why measure it:
a short pretraining can leave every stage past the stem near 1, whatever its loss curve says,
and then its fine-tunes start from what is mostly a random network.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from densessl.runs import initial_method, open_run


class StageDrift(NamedTuple):
    """Means over one stage's convs."""

    cosine: float
    change: float
    convs: int


def conv_filters(network: nn.Module) -> dict[str, torch.Tensor]:
    """A float64 copy of every conv weight of ``network``, by module name (taken before
    training, it stays the initial weights)."""
    return {
        name: module.weight.detach().to(torch.float64, copy=True)
        for name, module in network.named_modules()
        if isinstance(module, nn.Conv2d)
    }


def drift_by_stage(
    initial: dict[str, torch.Tensor], final: dict[str, torch.Tensor]
) -> dict[str, StageDrift]:
    """Per stage, in network order: the mean cosine and relative change of ``final``'s conv
    filters against ``initial``'s (both from :func:`conv_filters` of one architecture)."""
    stages: dict[str, list[tuple[float, float]]] = {}
    for name, w0 in initial.items():
        w0, w = w0.flatten(), final[name].flatten()
        cosine = (w @ w0 / (w.norm() * w0.norm())).item()
        change = ((w - w0).norm() / w0.norm()).item()
        stages.setdefault(name.split(".")[0], []).append((cosine, change))
    return {
        stage: StageDrift(
            cosine=sum(c for c, _ in rows) / len(rows),
            change=sum(d for _, d in rows) / len(rows),
            convs=len(rows),
        )
        for stage, rows in stages.items()
    }


def run_drift(run: str | Path) -> dict[str, StageDrift]:
    """How far a run's released backbone moved from the one it began with
    (:func:`densessl.runs.initial_method`); WeightsError for a run started from a file."""
    method, cfg = open_run(run)
    initial = initial_method(cfg).exportable(None)["backbone"]
    return drift_by_stage(conv_filters(initial), conv_filters(method.exportable(None)["backbone"]))
