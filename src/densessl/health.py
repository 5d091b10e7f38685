"""Collapse signals of a pretraining run, measured on embeddings of a fixed held batch.

A run can collapse to one output for every image while its loss looks sane. Measures:

- **effective rank** (RankMe): for Z (N, D) with singular values σ_k, p_k = σ_k / Σ_j σ_j + ε,
  rank = exp(−Σ_k p_k log p_k); 1 when every row is one direction.
- **spread** (SimSiam): √D times the mean per-dimension std of the ℓ2-normalised rows; about 1
  for evenly spread unit vectors, 0 for identical rows.
- **teacher entropy** (DINO): mean per-image entropy over log K; 1 for a uniform teacher.
- **teacher diversity**: entropy of the mean output over the held images, over log min(N, K);
  0 when all go to one prototype, which a sharp per-image entropy cannot tell from health.
- **projection spread**: the spread of the embeddings a method's loss compares (its teacher's
  pixel projections, for dense methods); a projector can put every pixel on one vector while
  the backbone's pooled embeddings stay spread, and the loss then sits at its floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RANKME_EPS = 1e-7  # RankMe's ε: keeps log p finite for zero singular values


def effective_rank(embeddings: torch.Tensor) -> float:
    """RankMe of (N, D) embeddings (module docstring)."""
    sigma = torch.linalg.svdvals(embeddings.float())
    p = sigma / sigma.sum().clamp_min(1e-12) + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def spread(embeddings: torch.Tensor) -> float:
    """√D times the mean per-dimension std of the ℓ2-normalised (N, D) rows."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    return float(unit.std(dim=0, unbiased=False).mean() * math.sqrt(unit.shape[1]))


def entropy_ratio(probabilities: torch.Tensor) -> float:
    """Mean entropy of (N, K) distributions over log K: 1 for uniform rows, 0 for one-hot."""
    p = probabilities.float()
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
    return float(entropy.mean() / math.log(p.shape[1]))


def diversity_ratio(probabilities: torch.Tensor) -> float:
    """Entropy of the mean of (N, K) distributions over log min(N, K): 1 when the rows are
    one-hot on N different entries, 0 when they all put their mass on the same one."""
    p = probabilities.float().mean(dim=0)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return float(min(1.0, entropy / math.log(min(probabilities.shape))))


@dataclass(frozen=True)
class CollapseThresholds:
    """Values past which a run is reported as collapsing (measured: docs/health.md): rank at or
    under ``rank`` (held batch of 64), spread under ``spread``, teacher entropy over ``entropy``,
    teacher diversity under ``diversity``, projection spread under ``projection``."""

    rank: float = 2.0
    spread: float = 0.02
    entropy: float = 0.95
    diversity: float = 0.3
    projection: float = 0.06


COLLAPSE = CollapseThresholds()


def thresholds(limits: CollapseThresholds = COLLAPSE) -> dict[str, float]:
    """Each measure's collapse threshold, by its key in the metrics."""
    return {
        "effective_rank": limits.rank,
        "spread": limits.spread,
        "teacher_entropy": limits.entropy,
        "teacher_diversity": limits.diversity,
        "projection_spread": limits.projection,
    }


def collapse_signs(
    values: dict[str, float], limits: CollapseThresholds = COLLAPSE
) -> dict[str, str]:
    """A short phrase per measure in ``values`` (keys of :data:`MEASURES`; any may be missing)
    that says collapse."""
    limit = thresholds(limits)
    crossed = {
        "effective_rank": lambda v: v <= limit["effective_rank"],
        "spread": lambda v: v < limit["spread"],
        "teacher_entropy": lambda v: v > limit["teacher_entropy"],
        "teacher_diversity": lambda v: v < limit["teacher_diversity"],
        "projection_spread": lambda v: v < limit["projection_spread"],
    }
    phrases = {
        "effective_rank": f"<= {limits.rank:g}: the embeddings span a line",
        "spread": f"< {limits.spread:g}: every image embeds alike",
        "teacher_entropy": f"> {limits.entropy:g} of its maximum: the teacher outputs the "
        "uniform distribution",
        "teacher_diversity": f"< {limits.diversity:g}: the teacher sends every image to the "
        "same few outputs",
        "projection_spread": f"< {limits.projection:g}: the projector gives every pixel the "
        "same embedding",
    }
    return {
        key: f"{MEASURES[key]} {values[key]:.3f} {phrases[key]}"
        for key in crossed
        if key in values and crossed[key](values[key])
    }


MEASURES = {
    "effective_rank": "effective rank",
    "spread": "spread",
    "teacher_entropy": "teacher entropy",
    "teacher_diversity": "teacher diversity",
    "projection_spread": "projection spread",
}
MEANING = {
    "effective_rank": "of the held images' embeddings; collapsed at or under {rank:g}",
    "spread": "about 1 when embeddings point every way; collapsed under {spread:g}",
    "teacher_entropy": "share of its maximum; a uniform teacher over {entropy:g}",
    "teacher_diversity": "1: the images go to different outputs; collapsed under {diversity:g}",
    "projection_spread": "of the embeddings the loss compares; collapsed under {projection:g}",
}


def health_report(records: list[dict], limits: CollapseThresholds = COLLAPSE) -> tuple[str, bool]:
    """The text ``densessl health`` prints for a run's metrics records with health measures,
    and whether the last check is healthy."""
    checks = [r for r in records if "effective_rank" in r]
    first, last = checks[0], checks[-1]
    lines = [f"health at step {last['step']} (first check: step {first['step']})"]
    for key, name in MEASURES.items():
        if key in last:
            meaning = MEANING[key].format(**vars(limits))
            lines.append(f"  {name:<16}{last[key]:>8.3f}  (step {first['step']}: "
                         f"{first[key]:.3f}; {meaning})")  # fmt: skip
    signs = collapse_signs(last, limits)
    verdict = "collapsing: " + "; ".join(signs.values()) if signs else "healthy"
    lines.append("verdict: " + verdict)
    return "\n".join(lines), not signs
