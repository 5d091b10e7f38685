"""Comparing inits under one protocol: the same labelled subsets, the same seeds, one table.

A row is the mean ± sd over seeds (``ddof=1``). A margin pairs by seed, ``d_s = first_s −
row_s``, reported as mean ± sd of ``d_s``, *beyond twice its spread* when ``|mean| > 2 · sd``
(two seeds or more); pairing removes what seeds share, so margins are tighter than rows.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from densessl.eval.labels import label_count


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class Margin:
    """first row − one row, paired by seed (see the module docstring)."""

    mean: float
    sd: float
    per_seed: tuple[float, ...]

    @property
    def beyond_twice_spread(self) -> bool | None:
        """|mean| > 2 sd; None with fewer than two seeds."""
        return None if math.isnan(self.sd) else abs(self.mean) > 2 * self.sd


@dataclass
class Comparison:
    """Scores of several inits at several label fractions and seeds.

    Attributes:
        protocol: what was run, e.g. ``"finetune-seg (fpn)"``.
        inits: init names in order; the first is the reference of every margin.
        labels: the label specs (``"10%"``, ``"37"`` ...), in order.
        scores: init -> label spec -> seed -> mIoU (%).
        subsets: label spec -> seed -> the labelled images.
    """

    protocol: str
    inits: list[str]
    sources: dict[str, str]
    labels: list[str]
    train_images: int
    scores: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    subsets: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)

    def seeds(self, labels: str) -> list[int]:
        return sorted(self.scores[self.inits[0]][labels])

    def row(self, init: str, labels: str) -> tuple[float, float]:
        """Mean ± sd of one init at one label fraction."""
        by_seed = self.scores[init][labels]
        return mean_sd([by_seed[s] for s in sorted(by_seed)])

    def margin(self, init: str, labels: str) -> Margin:
        """first row − ``init``, paired by seed."""
        first, other = self.scores[self.inits[0]][labels], self.scores[init][labels]
        shared = sorted(set(first) & set(other))
        gaps = tuple(first[s] - other[s] for s in shared)
        mean, sd = mean_sd(gaps)
        return Margin(mean, sd, gaps)

    def format_table(self) -> str:
        """One block per label fraction: each init's mean ± sd, and its margin to the first."""
        first = self.inits[0]
        width = max(len(n) for n in self.inits)
        lines = [f"{self.protocol}: mIoU (%) on the validation split"]
        for labels in self.labels:
            seeds = self.seeds(labels)
            count = label_count(labels, self.train_images)
            lines += [
                "",
                f"labels {labels} ({count} of {self.train_images} images), seeds "
                f"{', '.join(map(str, seeds))}",
                f"{'init':<{width}}  {'mIoU':>13}  {first + ' - this':>18}  beyond 2 sd",
            ]
            for init in self.inits:
                mean, sd = self.row(init, labels)
                cell = f"{mean:6.1f} ± {_num(sd)}"
                if init == first:
                    lines.append(f"{init:<{width}}  {cell:>13}  {'':>18}")
                    continue
                m = self.margin(init, labels)
                margin_text = f"{m.mean:+6.1f} ± {_num(m.sd)}"
                verdict = {None: "n/a (1 seed)", True: "yes", False: "no"}[m.beyond_twice_spread]
                lines.append(f"{init:<{width}}  {cell:>13}  {margin_text:>18}  {verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-safe: the rows, margins and per-seed scores of every label fraction."""
        out = {"protocol": self.protocol, "inits": self.sources, "train_images": self.train_images,
               "details": self.details, "labels": {}}  # fmt: skip
        for labels in self.labels:
            rows = {}
            for init in self.inits:
                mean, sd = self.row(init, labels)
                per_seed = {str(s): v for s, v in self.scores[init][labels].items()}
                row = {"mean": _json(mean), "sd": _json(sd), "per_seed": per_seed}
                if init != self.inits[0]:
                    m = self.margin(init, labels)
                    row["margin_to_first"] = {
                        "mean": _json(m.mean),
                        "sd": _json(m.sd),
                        "beyond_twice_spread": m.beyond_twice_spread,
                    }
                rows[init] = row
            out["labels"][labels] = {
                "count": label_count(labels, self.train_images),
                "rows": rows,
                "subsets": {str(s): names for s, names in self.subsets.get(labels, {}).items()},
            }
        return out

    def write_json(self, path: Path) -> Path:
        from densessl.engine.checkpoint import atomic_write

        text = (json.dumps(self.to_dict(), indent=2) + "\n").encode()
        atomic_write(Path(path), lambda f: f.write(text))
        return Path(path)

    def plot(self, path: Path) -> Path:
        """mIoU against the number of labelled images, one line per init (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = [label_count(labels, self.train_images) for labels in self.labels]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for init in self.inits:
            rows = [self.row(init, labels) for labels in self.labels]
            errors = [0.0 if math.isnan(sd) else sd for _, sd in rows]
            ax.errorbar(counts, [m for m, _ in rows], yerr=errors, marker="o", capsize=3,
                        label=init)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("validation mIoU (%)")
        ax.set_title(self.protocol)
        ax.legend()
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def run_comparison(
    comparison: Comparison,
    seeds: Sequence[int],
    score: Callable[[str, str, int], tuple[float, list[str]]],
) -> Comparison:
    """Fill ``comparison`` with ``score(init, labels, seed)`` -> (mIoU, labelled images) for
    every label fraction, seed and init (inits innermost, so a seed's rows finish together)."""
    for labels in comparison.labels:
        for seed in seeds:
            for init in comparison.inits:
                miou, images = score(init, labels, seed)
                comparison.scores.setdefault(init, {}).setdefault(labels, {})[seed] = miou
                comparison.subsets.setdefault(labels, {})[seed] = images
    return comparison
