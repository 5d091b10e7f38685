"""Pictures of a run, written as PNG (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curves(runs: dict[str, Path], out: Path) -> Path:
    """One panel per logged loss term (total first), one line per run."""
    records = {name: read_metrics(d) for name, d in runs.items()}
    term_names = {k for rs in records.values() for r in rs for k in r if k.startswith("loss_")}
    terms = ["loss", *sorted(term_names)]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for name, rs in records.items():
            points = [(r["step"], r[term]) for r in rs if term in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
