"""Open a run: the one place that finds a run's checkpoint, reads it and rebuilds its method.

A run is a folder written by ``densessl pretrain`` (``RUN/config.yaml``,
``RUN/checkpoints/last.pt``, ``RUN/metrics.jsonl``), or one of its checkpoint files. Resume,
export, evaluation and the pictures all open runs through here, so they agree on where the
checkpoint lives and how it is read (``weights_only=True``: tensors and plain containers only).
It sits between the methods and the engine: the engine writes checkpoints in the format read
here, and resumes through :func:`read_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from densessl.config import build_config
from densessl.errors import WeightsError
from densessl.methods import Method, build_method, get_method

CHECKPOINT_FORMAT = "densessl-checkpoint-v1"  # the "format" entry of every training checkpoint
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
METRICS_NAME = "metrics.jsonl"


def checkpoint_path(run: str | Path) -> Path:
    """The checkpoint of ``run``: a run folder's ``checkpoints/last.pt``, or the file itself.

    Raises:
        WeightsError: there is no such file.
    """
    run = Path(run)
    path = run / LAST_CHECKPOINT if run.is_dir() else run
    if not path.exists():
        raise WeightsError(f"no checkpoint at {path}: pass a run directory or a .pt checkpoint")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a densessl checkpoint (tensors and plain containers only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a densessl training checkpoint")
    return state


def read_checkpoint(run: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a run folder or checkpoint file (what resume continues from).

    Raises:
        WeightsError: no checkpoint there. ValueError: the file is not a densessl checkpoint.
    """
    return load_checkpoint(checkpoint_path(run))


def method_from_checkpoint(state: dict[str, Any]) -> tuple[Method, DictConfig]:
    """Rebuild a method from a read checkpoint (its saved config and weights), on the CPU.

    Returns:
        The method in eval mode with the trained weights, and the run's full config.
    """
    saved = state["config"]
    cfg = build_config(get_method(saved["method"]["name"]))
    cfg.merge_with(saved)
    method = build_method(cfg)
    method.load_state_dict(state["model"])
    return method.eval(), cfg


def open_run(run: str | Path) -> tuple[Method, DictConfig]:
    """The trained method of a run folder or checkpoint file, and its config (see above)."""
    return method_from_checkpoint(read_checkpoint(run))


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """Every record a run logged to ``RUN/metrics.jsonl``, in order."""
    path = Path(run) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
