"""The CamVid benchmarks' shared bookkeeping: probe one frozen backbone into a table row, and
merge rows into one JSON file, so that one measurement can be split into several short jobs on
a shared machine (benchmarks/camvid_transfer.py, benchmarks/continue_camvid.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from densessl.eval.protocols.frozen_probe import frozen_scores


def probe_row(model, train_set, val_set, levels: list[str] | None, probe_size: int) -> dict:
    """Linear probe and dense k-NN of a frozen backbone, fitted on ``train_set`` and scored on
    ``val_set`` at a ``probe_size`` px shorter side; ``levels=None`` takes the model's own."""
    started = time.perf_counter()
    scores = frozen_scores(model, train_set, val_set, levels, probe_size)
    return {
        "linear": scores["linear"].to_dict(),
        "knn": scores["knn"].to_dict(),
        "levels": "+".join(levels or model.default_levels),
        "probe_minutes": round((time.perf_counter() - started) / 60, 1),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "threads": torch.get_num_threads(),
    }


def save_row(results: Path, name: str, row: dict) -> None:
    """Merge one row into the JSON file, re-reading it so parallel invocations keep theirs."""
    rows = json.loads(results.read_text()) if results.exists() else {}
    rows[name] = row
    results.parent.mkdir(parents=True, exist_ok=True)
    scratch = results.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(rows, indent=2) + "\n")
    scratch.replace(results)


def pretrain_minutes(run_dir: Path) -> float | None:
    """Minutes the run's own summary recorded (None before it finished): a pretraining run
    reused by a later invocation (a split job, a re-probe) keeps its own time."""
    summary = run_dir / "summary.json"
    if not summary.exists():
        return None
    return round(json.loads(summary.read_text())["seconds"] / 60, 1)


def miou_line(name: str, row: dict) -> str:
    return f"{name}: linear {row['linear']['miou']:.1f} mIoU, k-NN {row['knn']['miou']:.1f} mIoU"
