"""The demo's report: margins, their seed spread, which probe it leads with, read from worked
examples.

The figures are chosen so that every value has a closed form: per-seed gaps 5, 6, 7 have mean 6
and standard deviation (ddof=1) exactly 1."""

from __future__ import annotations

import json
import re

import pytest

from densessl import demo, demo_report
from densessl.demo_report import PROBES

ROWS = ("DenseCL", "MoCo-v2", "random init", "raw pixels")


def scores(dense: float, moco: float, random: float, pixels: float) -> dict:
    values = dict(zip(ROWS, (dense, moco, random, pixels), strict=True))
    out = {}
    for name, v in values.items():
        out[name] = {"linear": {"miou": v}, "knn": {"miou": v - 1.0}, "linear_few": {"miou": v - 5}}
        if name != "raw pixels":
            out[name]["correspondence"] = {"accuracy": 50.0, "chance": 30.0, "scored": 100}
    return out


def spread(per_probe: dict[str, dict[str, list[float]]]) -> dict:
    rows = {
        probe: {n: {"values": v} for n, v in values.items()} for probe, values in per_probe.items()
    }
    return {"seeds": 3, "date": "2026-01-01", "machine": "test", "rows": rows}


ABOVE = {  # both pretrained rows separate from random init: gaps 12, 14, 16 and 7, 8, 9
    "DenseCL": [30.0, 32.0, 34.0],
    "MoCo-v2": [25.0, 26.0, 27.0],
    "random init": [18.0, 18.0, 18.0],
    "raw pixels": [10.0, 12.0, 11.0],
}
NOISY = {  # DenseCL - random init: gaps 4, -2, 1 (mean +1, sd 3): within the noise
    "DenseCL": [22.0, 16.0, 19.0],
    "MoCo-v2": [25.0, 26.0, 27.0],
    "random init": [18.0, 18.0, 18.0],
    "raw pixels": [10.0, 12.0, 11.0],
}
FACTS = demo.demo_facts(demo.DEMO_STEPS)


def test_margins_are_differences_of_rows():
    gaps = demo_report.margins(scores(30.0, 25.0, 18.0, 10.0), "linear")
    assert gaps == {
        "DenseCL - MoCo-v2": 5.0,
        "DenseCL - random init": 12.0,
        "MoCo-v2 - random init": 7.0,
        "random init - raw pixels": 8.0,
        "DenseCL - raw pixels": 20.0,
        "MoCo-v2 - raw pixels": 15.0,
    }


def test_margin_spread_is_paired_by_seed():
    seeds = spread({"linear": ABOVE})
    assert demo_report.paired_margin(seeds, "linear", "DenseCL - MoCo-v2") == pytest.approx(
        (6.0, 1.0)
    )
    assert demo_report.paired_margin(seeds, "linear", "DenseCL - random init") == pytest.approx(
        (14.0, 2.0)
    )
    # unpaired, the rows' own spreads (2 and 1) would give a different figure
    assert demo_report.paired_margin(seeds, "linear", "MoCo-v2 - raw pixels")[1] == pytest.approx(
        1.0
    )
    assert demo_report.paired_margin(seeds, "knn", "DenseCL - MoCo-v2") is None  # not measured


def test_a_separation_needs_a_positive_mean_at_least_twice_its_spread():
    assert demo_report.separates(spread({"linear": ABOVE}), "linear", "DenseCL - random init")
    assert not demo_report.separates(spread({"linear": NOISY}), "linear", "DenseCL - random init")
    below = {**ABOVE, "DenseCL": [8.0, 8.0, 9.0]}  # far beyond its spread, but negative
    assert not demo_report.separates(spread({"linear": below}), "linear", "DenseCL - random init")
    assert demo_report.separates(None, "linear", "DenseCL - random init") is None


def test_the_report_leads_with_the_first_probe_that_separates():
    # k-NN noisy, linear separates: the lead is the linear probe
    seeds = spread({"knn": NOISY, "linear": ABOVE, "linear_few": ABOVE})
    assert demo_report.lead_probe(seeds) == "linear"
    text = demo_report.in_short(scores(30.0, 25.0, 18.0, 10.0), seeds, FACTS)
    assert "**linear probe, 300 labelled scenes**" in text
    assert "DenseCL +12.0, MoCo-v2 +7.0" in text
    # only DenseCL separates, on k-NN: the answer names it and says MoCo-v2's lead is noise
    one = {**ABOVE, "MoCo-v2": NOISY["DenseCL"]}  # MoCo-v2 - random init: +1 ± 3
    partly = spread({"knn": one, "linear": NOISY, "linear_few": NOISY})
    assert demo_report.lead_probe(partly) is None
    text = demo_report.in_short(scores(30.0, 25.0, 18.0, 10.0), partly, FACTS)
    assert "**k-NN retrieval" in text and "for DenseCL:" in text and "DenseCL +12.0 mIoU" in text
    assert "MoCo-v2's lead there is within that spread" in text
    # none separates: said so, with no probe named as the answer
    both_noisy = {**NOISY, "MoCo-v2": NOISY["DenseCL"]}
    nothing = spread({probe: both_noisy for probe in PROBES})
    assert demo_report.lead_probe(nothing) is None
    assert "no probe separates" in demo_report.in_short(scores(20, 25, 18, 10), nothing, FACTS)


def test_the_shipped_seed_benchmark_is_readable_by_the_report():
    shipped = demo_report.read_spread()
    assert shipped is not None
    # measured on the demo's own recipe and length, which the report reads it against
    assert shipped["recipe"] is None and shipped["steps"] == demo.DEMO_STEPS
    for probe_rows in shipped["rows"].values():
        assert set(probe_rows) == set(ROWS)
        assert all(len(row["values"]) == shipped["seeds"] for row in probe_rows.values())
    lines = demo_report.reading(scores(20.0, 20.0, 23.0, 13.0), shipped, FACTS)
    measured = [p for p in PROBES if p in shipped["rows"]]
    assert sum(line.count(f"over {shipped['seeds']} seeds") for line in lines) == 3 * len(measured)


def test_a_run_of_another_length_is_told_that_the_spread_is_not_its_own():
    measured = {**spread({"linear": ABOVE}), "steps": 300}
    other = demo.demo_facts(50)
    assert any(
        "the benchmark 300" in line
        for line in demo_report.reading(scores(30, 25, 18, 10), measured, other)
    )
    same = demo.demo_facts(300)
    assert not any(
        "the benchmark 300" in line
        for line in demo_report.reading(scores(30, 25, 18, 10), measured, same)
    )


def test_each_margin_says_ahead_behind_or_within_the_noise():
    seeds = spread({"knn": NOISY, "linear": ABOVE})
    lines = demo_report.reading(scores(30.0, 25.0, 18.0, 10.0), seeds, FACTS)
    knn, linear = lines[0], lines[1]
    assert "DenseCL - random init +12.0 this run, +1.0 ± 3.0 over 3 seeds (within the noise)" in knn
    assert "+14.0 ± 2.0 over 3 seeds (ahead, beyond twice the spread)" in linear
    behind = {**ABOVE, "DenseCL": [8.0, 8.0, 9.0]}  # -10, -10, -9
    line = demo_report.reading(scores(8.0, 25.0, 18.0, 10.0), spread({"linear": behind}), FACTS)[1]
    assert "-9.7 ± 0.6 over 3 seeds (behind, beyond twice the spread)" in line


def test_correspondence_is_read_against_chance():
    line = demo_report.correspondence_line(scores(30, 25, 18, 10))
    assert "DenseCL 50%, MoCo-v2 50%, random init 50%" in line
    assert "a random match scores 30%" in line


def test_the_drift_line_names_the_least_moved_stage_past_the_first():
    from densessl.eval.drift import StageDrift

    def stages(*cosines):
        return {f"s{i}": StageDrift(c, 0.1, 2) for i, c in enumerate(cosines)}

    near = {"DenseCL": stages(0.6, 0.999, 0.991, 0.998), "MoCo-v2": stages(0.5, 0.97, 0.99)}
    line = demo_report.drift_line(near)
    assert "at least DenseCL 0.991, MoCo-v2 0.970 past the first layer" in line
    assert "and DenseCL 0.60, MoCo-v2 0.50 in it." in line
    assert "turned the first layer's filters and left the deeper ones close" in line
    moved = {**near, "MoCo-v2": stages(0.5, 0.94, 0.99)}  # one stage under NEAR_INIT: no verdict
    assert "random init's" not in demo_report.drift_line(moved)
    still = {name: stages(0.99, 0.999) for name in near}
    assert "left every layer close to random init's" in demo_report.drift_line(still)
    assert demo_report.drift_line(None) is None


def test_the_report_speaks_of_the_product_and_holds_its_tables(tmp_path):
    rows = scores(20.0, 21.0, 23.0, 13.0)
    figures = {"loss": "l.png", "matches": "m.png", "pca_densecl": "d.png", "pca_mocov2": "p.png"}
    from densessl.eval.drift import StageDrift

    drift = {name: {"conv1": StageDrift(0.6, 1.0, 1), "layer1": StageDrift(0.99, 0.1, 4)}
             for name in ("DenseCL", "MoCo-v2")}  # fmt: skip
    path = demo_report.write_report(tmp_path, rows, {"probes": 60.0}, FACTS, figures, None, drift)
    text = path.read_text()
    assert "- **What the pretraining changed.**" in text
    assert "| DenseCL | 19.0 | 20.0 | 15.0 | 50% (30%) |" in text
    assert "| raw pixels | 12.0 | 13.0 | 8.0 | — |" in text
    assert all(f"({name})" in text for name in figures.values())
    assert not re.search(r"\bissues?\b|\btargets?\b", text, re.IGNORECASE)
    shipped = json.loads(demo_report.REAL_IMAGES.read_text())
    for table in shipped["tables"]:
        assert table["title"] in text
        assert all("| " + " | ".join(row) + " |" in text for row in table["rows"])
