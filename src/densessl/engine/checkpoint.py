"""Full-state checkpoints, written atomically and loadable with ``weights_only=True``.

A checkpoint holds the method's state_dict (student, teacher, queues), the optimizer, the AMP
scaler, the next step, the data position and the RNG states. Written to a temporary
(``.NAME.densessl-tmp-PID``) beside the target, flushed, then renamed over it, so a crash never
leaves half a ``last.pt``; one left by ``kill -9`` is swept by the next run in the folder.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from densessl.engine.interrupts import signals_deferred
from densessl.runs import CHECKPOINT_FORMAT

TEMPORARY_MARK = ".densessl-tmp-"  # ".<name>.densessl-tmp-<pid>": only densessl's own match


def temporary_path(path: Path) -> Path:
    """Where :func:`atomic_write` writes ``path`` before the rename."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the whole new one, never half of it. Signals
    received meanwhile are delivered after the rename (or after the failed write's clean-up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with signals_deferred():
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:  # an error mid-write: no temporary is left (kill -9: swept at start)
            tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/last.pt`` (and a step-numbered copy when ``keep`` > 0)."""
    folder = run_dir / "checkpoints"
    payload = {"format": CHECKPOINT_FORMAT, "step": step, "rng": rng_state(), **payload}
    last = folder / "last.pt"
    atomic_save(payload, last)
    if keep > 0:
        numbered = folder / f"step_{step:08d}.pt"
        atomic_save(payload, numbered)
        old = sorted(folder.glob("step_*.pt"))[:-keep]
        for p in old:
            p.unlink(missing_ok=True)
    return last
