"""``densessl eval linear-seg``: a linear per-pixel classifier on frozen features, mIoU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densessl.eval.protocols import frozen_probe
from densessl.eval.protocols.base import EvalProtocol
from densessl.registry import EVAL_PROTOCOLS


def evaluate(weights: str | Path, data: str | Path | None = None, **keywords: Any):
    """Linear per-pixel probe on frozen features; arguments as :func:`densessl.api.knn_seg`.
    Returns ``SegmentationScores`` (``miou``, ``per_class_iou`` ...)."""
    from densessl.eval.linear_seg import LinearSegOptions, linear_seg

    return frozen_probe.run_probe(LinearSegOptions, linear_seg, weights, data, **keywords)


SUMMARY = "linear per-pixel classifier on frozen features (mIoU)"
EVAL_PROTOCOLS.register("linear-seg")(
    EvalProtocol(
        "linear-seg", SUMMARY, SUMMARY, frozen_probe.FLAGS, evaluate, keywords=frozen_probe.keywords
    )
)
