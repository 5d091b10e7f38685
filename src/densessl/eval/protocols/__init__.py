"""Evaluation protocols, one file each, registered in ``EVAL_PROTOCOLS``; the command line and
:func:`densessl.api.evaluate` derive their sub-commands, flags and dispatch from them
(docs/adding-an-eval.md). Nothing heavy is imported here: the parser is built from them."""

# Imported for their registration side effect.
from densessl.eval.protocols import detect, finetune_seg, knn_seg, linear_seg  # noqa: F401
from densessl.eval.protocols.base import EvalProtocol, Flag
from densessl.registry import EVAL_PROTOCOLS

__all__ = ["EVAL_PROTOCOLS", "EvalProtocol", "Flag"]
