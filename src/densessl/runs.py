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
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from densessl.config import build_config
from densessl.errors import DataError, WeightsError
from densessl.methods import Method, build_method, get_method
from densessl.models.weight_files import load_torch_file

CHECKPOINT_FORMAT = "densessl-checkpoint-v1"  # the "format" entry of every training checkpoint
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
METRICS_NAME = "metrics.jsonl"

log = logging.getLogger("densessl")


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
    """Load a densessl training checkpoint (tensors and plain containers only).

    Raises:
        WeightsError: the file is unreadable, or is not a densessl training checkpoint (e.g. an
            exported state dict).
    """
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is not a densessl training checkpoint (an exported file, or another "
            "library's); pass a run folder or its checkpoints/last.pt"
        )
    return state


def read_checkpoint(run: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a run folder or checkpoint file (what resume continues from).

    Raises:
        WeightsError: no checkpoint there, or the file is unreadable or not a densessl one.
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
    load_method_weights(method, state["model"], cfg.backbone)
    return method.eval(), cfg


def load_method_weights(method: Method, weights: dict[str, Any], backbone: str) -> None:
    """``method.load_state_dict(weights)``; a checkpoint of another architecture is a one-line
    WeightsError (naming the backbone asked for), not hundreds of missing keys."""
    try:
        method.load_state_dict(weights)
    except RuntimeError as err:
        missing = sorted(set(method.state_dict()) - set(weights))
        unexpected = sorted(set(weights) - set(method.state_dict()))
        example = (missing or unexpected or ["a tensor of another shape"])[0]
        raise WeightsError(
            f"the checkpoint does not fit a {method.cfg.name} on {backbone} ({len(missing)} "
            f"missing, {len(unexpected)} unexpected keys, e.g. {example}); keep the run's "
            "backbone or start a new run with another --out"
        ) from err


def open_run(run: str | Path) -> tuple[Method, DictConfig]:
    """The trained method of a run folder or checkpoint file, and its config (see above)."""
    return method_from_checkpoint(read_checkpoint(run))


def parse_metrics(text: str, path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl text. A torn final line (a crash or a full disk mid-write)
    is dropped with a warning; a damaged line before the last is a DataError."""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                log.warning(
                    "%s: dropped its torn last line %d (an interrupted write)", path, number
                )
                break
            raise DataError(
                f"{path} line {number} is not JSON ({err.msg}); repair or delete that line"
            ) from err
    return records


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """Every record a run logged to ``RUN/metrics.jsonl``, in order (see :func:`parse_metrics`)."""
    path = Path(run) / METRICS_NAME
    return parse_metrics(path.read_text(), path)
