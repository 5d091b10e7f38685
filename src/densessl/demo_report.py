"""The demo's report: what ran, the table, what the numbers say, and the same question on real
images.

Margins are ``"A - B" = mIoU(A) - mIoU(B)``; where the shipped seed benchmark
(``reference/demo_seeds.json``) measured a probe, a margin is a separation only when its
seed-paired mean is positive and at least twice its standard deviation.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "reference"
SEED_SPREAD = REFERENCE / "demo_seeds.json"  # benchmarks/demo_seeds.py
REAL_IMAGES = REFERENCE / "real_images.json"  # the tables of BENCHMARKS.md the report quotes

# A stage whose filters keep this cosine to their init has barely turned (densessl.eval.drift).
NEAR_INIT = 0.95
# mIoU-valued probes, in the order the report reads them.
PROBES = ("knn", "linear", "linear_few")
PRETRAINED = ("DenseCL", "MoCo-v2")
COMPARISONS = (
    ("DenseCL", "random init"),
    ("MoCo-v2", "random init"),
    ("DenseCL", "MoCo-v2"),
    # the guard against a trivial proxy: pretrained features must stay above raw pixels
    ("DenseCL", "raw pixels"),
    ("MoCo-v2", "raw pixels"),
    ("random init", "raw pixels"),
)


@dataclass(frozen=True)
class DemoFacts:
    """What the demo ran, in the words and numbers the report states."""

    steps: int
    batch: int
    view: int
    scenes: int
    classes: list[str]
    recipes: list[str]
    probe_size: int
    levels: list[str]
    probe_train: int
    probe_few: int
    probe_val: int
    correspondence_images: int
    paper_views: str = "256 million"

    def probe_title(self, probe: str) -> str:
        return {
            "knn": "k-NN retrieval",
            "linear": f"linear probe, {self.probe_train} labelled scenes",
            "linear_few": f"linear probe, {self.probe_few} labelled scenes",
        }[probe]


def margins(scores: dict[str, dict], probe: str) -> dict[str, float]:
    """``"A - B"`` -> mIoU(A) - mIoU(B) of this run, for each of :data:`COMPARISONS`."""
    miou = {name: s[probe]["miou"] for name, s in scores.items()}
    return {f"{a} - {b}": miou[a] - miou[b] for a, b in COMPARISONS}


def read_spread(path: Path = SEED_SPREAD) -> dict | None:
    """The seed benchmark's results, or None when there are none."""
    return json.loads(path.read_text()) if path.exists() else None


def paired_margin(spread: dict, probe: str, comparison: str) -> tuple[float, float] | None:
    """Seed-paired mean and sd (``ddof=1``) of ``"A - B"``; None if ``probe`` was not measured."""
    rows = spread["rows"].get(probe)
    if rows is None:
        return None
    first, second = comparison.split(" - ")
    gaps = [a - b for a, b in zip(rows[first]["values"], rows[second]["values"], strict=True)]
    return statistics.fmean(gaps), statistics.stdev(gaps)


def separates(spread: dict | None, probe: str, comparison: str) -> bool | None:
    """Is ``"A - B"`` positive and at least twice its spread over seeds? None: not measured."""
    measured = paired_margin(spread, probe, comparison) if spread else None
    if measured is None:
        return None
    mean, sd = measured
    return mean > 0 and mean >= 2 * sd


def lead_probe(spread: dict | None) -> str | None:
    """The first probe on which every pretrained row separates from random init over seeds."""
    for probe in PROBES:
        if all(separates(spread, probe, f"{m} - random init") for m in PRETRAINED):
            return probe
    return None


def _margin_text(scores: dict, spread: dict | None, probe: str, comparison: str) -> str:
    gap = margins(scores, probe)[comparison]
    measured = paired_margin(spread, probe, comparison) if spread else None
    if measured is None:
        return f"{comparison} {gap:+.1f} (this run)"
    mean, sd = measured
    verdict = "within the noise" if abs(mean) < 2 * sd else "ahead" if mean > 0 else "behind"
    verdict += "" if abs(mean) < 2 * sd else ", beyond twice the spread"
    return (
        f"{comparison} {gap:+.1f} this run, {mean:+.1f} ± {sd:.1f} over {spread['seeds']} "
        f"seeds ({verdict})"
    )


def in_short(scores: dict, spread: dict | None, facts: DemoFacts) -> str:
    """The answer first: which protocol, if any, shows the pretraining's effect at this budget."""
    lead = lead_probe(spread)
    if lead is None:
        partial = [
            (probe, [m for m in PRETRAINED if separates(spread, probe, f"{m} - random init")])
            for probe in PROBES
        ]
        probe, ahead = next(((p, a) for p, a in partial if a), (None, []))
        if probe is not None:
            behind = [m for m in PRETRAINED if m not in ahead]
            gaps = ", ".join(
                f"{m} {margins(scores, probe)[f'{m} - random init']:+.1f}" for m in ahead
            )
            return (
                f"After {facts.steps} CPU steps the pretraining shows on "
                f"**{facts.probe_title(probe)}** for {' and '.join(ahead)}: over random init, "
                f"{gaps} mIoU in this run, and ahead beyond twice the seed-to-seed spread over "
                f"{spread['seeds']} seeds; {' and '.join(behind)}'s lead there is within that "
                "spread. The other probes, below, say how far that goes."
            )
        return (
            f"At {facts.steps} CPU steps, no probe separates the pretrained backbones from random "
            "init beyond the seed-to-seed noise on these scenes. The real-image tables below are "
            "the measure of what the recipes do at their full length."
        )
    title = facts.probe_title(lead)
    gaps = ", ".join(f"{m} {margins(scores, lead)[f'{m} - random init']:+.1f}" for m in PRETRAINED)
    return (
        f"After {facts.steps} CPU steps the pretraining shows on **{title}**: over random init, "
        f"{gaps} mIoU in this run, and ahead beyond twice the seed-to-seed spread over "
        f"{spread['seeds']} seeds. The other probes, below, say how far that goes."
    )


def reading(
    scores: dict, spread: dict | None, facts: DemoFacts, drift: dict | None = None
) -> list[str]:
    """One bullet per probe and the correspondence check, then the budget and its caveats."""
    lines = []
    for probe in PROBES:
        parts = [_margin_text(scores, spread, probe, f"{a} - {b}") for a, b in COMPARISONS[:3]]
        lines.append(f"- **{facts.probe_title(probe)}**: " + "; ".join(parts) + ".")
    lines.append(correspondence_line(scores))
    moved = drift_line(drift)
    if moved:
        lines.append(moved)
    linear_behind = any(
        margins(scores, probe)[f"{m} - random init"] < 0
        for probe in ("linear", "linear_few")
        for m in PRETRAINED
    )
    budget = facts.steps * facts.batch
    lines.append(
        f"- **The budget.** {facts.steps} steps show the ResNet-18 {budget:,} views of "
        f"{facts.view} px; the DenseCL paper's pretraining sees {facts.paper_views} at 224 px."
        + (
            " At this length instance discrimination narrows the random network's features "
            "faster than it adds class to them, so a linear layer trained on labels can do "
            "better on random features than on pretrained ones (BENCHMARKS.md measures this). "
            "Retrieval, which learns nothing from the labels, shows what the pretraining added."
            if linear_behind
            else ""
        )
    )
    if spread is None:
        lines.append("- No seed benchmark ships with this copy: each margin is one run's.")
    else:
        lines.append(
            f"- Spreads: benchmarks/demo_seeds.py, {spread['seeds']} seeds of "
            f"{spread.get('steps', '?')} steps ({spread['date']}, {spread['machine']})."
        )
        if spread.get("steps") not in (None, facts.steps):
            lines.append(
                f"- This run pretrained {facts.steps} steps, the benchmark {spread['steps']}: "
                "its spreads describe the other length."
            )
        if spread.get("probe_size", facts.probe_size) != facts.probe_size:
            lines.append(
                f"- The benchmark probed {spread['probe_size']} px scenes, this run "
                f"{facts.probe_size} px: its spreads describe the other probe."
            )
        missing = [facts.probe_title(p) for p in PROBES if p not in spread["rows"]]
        if missing:
            lines.append(f"- Not in the seed benchmark: {', '.join(missing)} (one run each).")
    return lines


def drift_line(drift: dict | None) -> str | None:
    """How far each pretrained backbone moved from its random start (densessl.eval.drift):
    the first stage (the stem), and the least-moved stage after it."""
    if not drift or any(len(stages) < 2 for stages in drift.values()):
        return None
    cosines = {name: [s.cosine for s in stages.values()] for name, stages in drift.items()}
    first = {name: values[0] for name, values in cosines.items()}
    deep = {name: min(values[1:]) for name, values in cosines.items()}
    line = (
        "- **What the pretraining changed.** The mean cosine of each stage's filters to where "
        "they started (1: unchanged; two unrelated random networks: about 0) is at least "
        + ", ".join(f"{name} {value:.3f}" for name, value in deep.items())
        + " past the first layer, and "
        + ", ".join(f"{name} {value:.2f}" for name, value in first.items())
        + " in it."
    )
    if min(deep.values()) >= NEAR_INIT:
        turned = min(first.values()) < NEAR_INIT
        line += (
            " At this length the pretraining has turned the first layer's filters and left the "
            "deeper ones close to random init's."
            if turned
            else " At this length the pretraining has left every layer close to random init's."
        )
    return line


def correspondence_line(scores: dict) -> str:
    rows = {name: s["correspondence"] for name, s in scores.items() if "correspondence" in s}
    if not rows:
        return "- **Correspondence**: not measured."
    chance = statistics.fmean(r["chance"] for r in rows.values())
    found = ", ".join(f"{name} {r['accuracy']:.0f}%" for name, r in rows.items())
    return (
        f"- **Correspondence** (C5 cells of one crop matched to the right cell of another, "
        f"within one cell): {found}; a random match scores {chance:.0f}%."
    )


def table(scores: dict, facts: DemoFacts) -> list[str]:
    head = ["features", *(f"{facts.probe_title(p)}, mIoU" for p in PROBES), "correspondence"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in scores.items():
        cells = [f"{s[p]['miou']:.1f}" for p in PROBES]
        match = s.get("correspondence")
        cells.append(f"{match['accuracy']:.0f}% ({match['chance']:.0f}%)" if match else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def real_images_section(path: Path = REAL_IMAGES) -> list[str]:
    """The real-image tables shipped with the package (measured as BENCHMARKS.md says)."""
    if not path.exists():
        return ["No real-image measurements ship with this copy."]
    lines = []
    for entry in json.loads(path.read_text())["tables"]:
        lines += [f"**{entry['title']}**", "", entry["setting"], ""]
        lines.append("| " + " | ".join(entry["columns"]) + " |")
        lines.append("|" + "---|" * len(entry["columns"]))
        lines += ["| " + " | ".join(row) + " |" for row in entry["rows"]]
        lines += ["", entry["reading"], ""]
    return lines


def write_report(
    out: Path,
    scores: dict,
    seconds: dict,
    facts: DemoFacts,
    figures: dict,
    spread: dict | None,
    drift: dict | None = None,
) -> Path:
    """RUN/report.md: the answer, what ran, the table, the reading, real images, pictures."""
    timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
    nl = "\n"
    text = f"""# densessl demo: does dense pretraining help?

{in_short(scores, spread, facts)}

## What ran

DenseCL and MoCo-v2 each pretrained a ResNet-18 from scratch for {facts.steps} steps of
{facts.batch} images ({", ".join(facts.recipes)}: {facts.view} px views) on {facts.scenes:,}
built-in aerial scenes, where the class of each object ({", ".join(facts.classes)}) is carried
by texture and parts, never by colour. *Random init* is the same network untrained; *raw
pixels* uses the image's own 16 x 16 pixel blocks as features. Every backbone was then frozen
and measured on scenes no pretraining saw, rendered at {facts.probe_size} px, with
{" + ".join(facts.levels)} features:

- **k-NN retrieval**: each location takes the labels of its most similar locations among the
  {facts.probe_train} labelled scenes; nothing is trained, so it reads the features as they are.
- **Linear probe**: a linear layer on the frozen features, trained on {facts.probe_train}
  labelled scenes, and on {facts.probe_few} of them (the few-label case).
- **Correspondence**: two crops of each of {facts.correspondence_images} scenes; the share of
  the first crop's C5 cells whose most similar cell in the second crop is within one cell of
  the true point (known from the crops), beside what a random match scores (in brackets).

Scores are mIoU over {facts.probe_val} scenes, in percent.

{nl.join(table(scores, facts))}

## What the numbers say

{nl.join(reading(scores, spread, facts, drift))}

## The same question on real images

The demo's budget is minutes; the tables below are the small-data recipes at their full length
on real street scenes.

{nl.join(real_images_section())}
Time on this machine: {timing}.

## Pictures

Loss curves:

![loss curves]({figures["loss"]})

DenseCL's matches between two crops (green: within one cell of the true point; red: wrong;
grey: the point is not in the other crop):

![DenseCL matches]({figures["matches"]})

PCA of C5 features (first three components as RGB), DenseCL then MoCo-v2:

![DenseCL PCA]({figures["pca_densecl"]})
![MoCo-v2 PCA]({figures["pca_mocov2"]})
"""
    path = out / "report.md"
    path.write_text(text)
    return path
