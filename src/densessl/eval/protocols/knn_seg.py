"""``densessl eval knn-seg``: dense nearest-neighbour label retrieval, no training, mIoU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from densessl.eval.protocols import frozen_probe
from densessl.eval.protocols.base import EvalProtocol, Flag
from densessl.registry import EVAL_PROTOCOLS


def evaluate(weights: str | Path, data: str | Path | None = None, **keywords: Any):
    """Dense k-NN label retrieval, no training: ``SegmentationScores``.

    Args:
        weights: run folder, checkpoint, exported file, or ``"random"``.
        data: labelled folder; None = held-out built-in scenes.
        **keywords: ``format``, ``split``, ``train_split``, ``labels`` (``"10%"`` or a count:
            the memory holds that subset of the training split, drawn by ``seed``),
            ``backbone``, ``network``, ``config``, ``overrides``, and any option of
            ``KnnSegOptions`` (``k``, ``temperature``, ``levels``, ``image_size``, ``device``,
            ``cache_dir`` ...).
    """
    from densessl.eval.knn_seg import KnnSegOptions, knn_seg

    return frozen_probe.run_probe(KnnSegOptions, knn_seg, weights, data, **keywords)


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    return {**frozen_probe.keywords(args), "k": args.k, "temperature": args.temperature}


SUMMARY = "dense nearest-neighbour label retrieval, no training (mIoU)"
FLAGS = (
    *frozen_probe.FLAGS,
    Flag("--k", "neighbours per patch, at least 1 (default 30)", type=int),
    Flag("--temperature", "softmax temperature, > 0 (default 0.02)", type=float),
)
EVAL_PROTOCOLS.register("knn-seg")(
    EvalProtocol("knn-seg", SUMMARY, SUMMARY, FLAGS, evaluate, keywords=keywords)
)
