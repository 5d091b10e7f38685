"""Open a run: the one place that finds a run's checkpoint, reads it and rebuilds its method.

A run is a folder written by ``densessl pretrain`` (``RUN/config.yaml``,
``RUN/checkpoints/last.pt``, ``RUN/metrics.jsonl``), or one of its checkpoint files. Resume,
export, evaluation and pictures all open runs here, read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from densessl.config import build_config
from densessl.errors import DataError, OutputError, WeightsError
from densessl.methods import Method, build_method, get_method
from densessl.models.weight_files import load_torch_file

CHECKPOINT_FORMAT = "densessl-checkpoint-v1"  # the "format" entry of every training checkpoint
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
CHECKPOINT_ENTRIES = ("step", "config", "model", "optimizer", "scaler", "rng", "skipped_files")
METRICS_NAME = "metrics.jsonl"
RUN_MARK = ".densessl-run"  # written into every run folder densessl creates
# What a run folder holds of densessl's own: nothing else writes these names there.
RUN_FILES = ("config.yaml", METRICS_NAME, "summary.json", ".lock", RUN_MARK)
RUN_FOLDERS = ("checkpoints", "tensorboard")

log = logging.getLogger("densessl")


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a densessl run: it has the mark, or a ``config.yaml`` beside
    ``checkpoints/last.pt`` (runs without the mark)."""
    folder = Path(folder)
    if (folder / RUN_MARK).is_file():
        return True
    return (folder / "config.yaml").is_file() and (folder / LAST_CHECKPOINT).is_file()


def enclosing_run(path: Path) -> Path | None:
    """The run folder ``path`` is in (or is), or None."""
    path = Path(path).absolute()
    return next((f for f in (path, *path.parents) if f.is_dir() and is_run_folder(f)), None)


def refuse_run_file(path: Path) -> None:
    """Refuse (:class:`OutputError`) to write ``path`` when it is one of a run's own files
    (config, metrics, summary, lock, mark, checkpoints, TensorBoard logs)."""
    path = Path(path).absolute()
    run = enclosing_run(path.parent)
    if run is None:
        return
    parts = path.relative_to(run).parts
    if not parts or parts[0] in RUN_FOLDERS or (len(parts) == 1 and parts[0] in RUN_FILES):
        raise OutputError(
            f"{path} is a file of the run {run}, which only training writes; "
            f"write another name (e.g. {run / 'backbone.pt'})"
        )


def checkpoint_path(run: str | Path) -> Path:
    """The checkpoint of ``run``: a run folder's ``checkpoints/last.pt``, or the file itself;
    :class:`WeightsError` if there is none."""
    run = Path(run)
    path = run / LAST_CHECKPOINT if run.is_dir() else run
    if not path.exists():
        raise WeightsError(f"no checkpoint at {path}: pass a run directory or a .pt checkpoint")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a densessl training checkpoint (tensors and plain containers only); raises
    :class:`WeightsError` if unreadable or not one."""
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is not a densessl training checkpoint (an exported file, or another "
            "library's); pass a run folder or its checkpoints/last.pt"
        )
    missing = [key for key in CHECKPOINT_ENTRIES if key not in state]
    if missing:
        raise WeightsError(
            f"{path} lacks {', '.join(map(repr, missing))}, which every densessl training "
            "checkpoint holds (a file edited or written by hand?); pass an intact checkpoint"
        )
    return state


def read_checkpoint(run: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a run folder or checkpoint file (:class:`WeightsError` if none)."""
    return load_checkpoint(checkpoint_path(run))


def method_from_checkpoint(state: dict[str, Any]) -> tuple[Method, DictConfig]:
    """Rebuild a method from a read checkpoint, on the CPU: the method in eval mode with the
    trained weights, and the run's full config."""
    saved = state["config"]
    cfg = build_config(get_method(saved["method"]["name"]))
    cfg.merge_with(saved)
    method = build_method(cfg)
    load_method_weights(method, state["model"], cfg.backbone)
    return method.eval(), cfg


def initial_method(cfg: DictConfig) -> Method:
    """The method as a run of ``cfg`` began, before its first step, on the CPU in eval mode.

    Training seeds torch with ``cfg.seed`` and then builds the method (``engine/session.py``);
    the same build under a private RNG gives the exact initial weights, and leaves the caller's
    RNG as it was. A run started from a weights file (``init``) began from that file instead:
    :class:`WeightsError`."""
    if cfg.get("init"):
        raise WeightsError(
            f"the run started from {cfg.init}, not from its seed: compare with that file's weights"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_method(cfg).eval()


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
