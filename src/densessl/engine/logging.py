"""Run outputs on the main process: metrics.jsonl, TensorBoard (if installed), throughput."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from densessl.console import log
from densessl.engine.checkpoint import atomic_write
from densessl.runs import parse_metrics


class MetricsWriter:
    """Appends one JSON object per logged step to RUN/metrics.jsonl; mirrors it to TensorBoard.

    On resume, records at or after the resumed step are dropped first, so no step appears twice.
    Building the writer only reads (a damaged file is refused); :meth:`start` writes.
    """

    def __init__(self, run_dir: Path, resume_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.resume_step = resume_step
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self._kept: str | None = None
        if enabled and self.path.exists():  # a torn last line (crash, full disk) is dropped
            records = parse_metrics(self.path.read_text(), self.path)
            self._kept = "".join(json.dumps(r) + "\n" for r in records if r["step"] <= resume_step)

    def start(self) -> None:
        """Drop the records past the resumed step and open TensorBoard (if installed)."""
        if not self.enabled:
            return
        if self._kept is not None and self._kept != self.path.read_text():
            kept = self._kept.encode()
            atomic_write(self.path, lambda f: f.write(kept))  # a crash keeps the old file
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                    purge_step=self.resume_step + 1)  # fmt: skip
        except ImportError:
            log.info("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float | int) and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Throughput:
    """Images per second over the steps since the last call to :meth:`rate`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return value
