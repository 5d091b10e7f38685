"""The demo's report: margins, their seed spread and the targets, read from worked examples.

The figures are chosen so that every value has a closed form: per-seed gaps 5, 6, 7 have mean 6
and standard deviation (ddof=1) exactly 1."""

from __future__ import annotations

import pytest

from densessl import demo


def scores(dense: float, moco: float, random: float, pixels: float) -> dict:
    rows = {"DenseCL": dense, "MoCo-v2": moco, "random init": random, "raw pixels": pixels}
    return {name: {"linear": {"miou": v}, "knn": {"miou": v - 1.0}} for name, v in rows.items()}


def spread(values: dict[str, list[float]]) -> dict:
    rows = {name: {"values": v} for name, v in values.items()}
    return {
        "seeds": 3,
        "date": "2026-01-01",
        "machine": "test",
        "rows": {"linear": rows, "knn": rows},
    }


SEEDS = spread(
    {
        "DenseCL": [30.0, 32.0, 34.0],
        "MoCo-v2": [25.0, 26.0, 27.0],
        "random init": [18.0, 18.0, 18.0],
        "raw pixels": [10.0, 12.0, 11.0],
    }
)


def test_margins_are_differences_of_rows():
    gaps = demo.margins(scores(30.0, 25.0, 18.0, 10.0), "linear")
    assert gaps == {
        "DenseCL - MoCo-v2": 5.0,
        "DenseCL - random init": 12.0,
        "MoCo-v2 - random init": 7.0,
        "random init - raw pixels": 8.0,
        "DenseCL - raw pixels": 20.0,
        "MoCo-v2 - raw pixels": 15.0,
    }


def test_margin_spread_is_paired_by_seed():
    assert demo.paired_margin(SEEDS, "linear", "DenseCL - MoCo-v2") == pytest.approx((6.0, 1.0))
    assert demo.paired_margin(SEEDS, "linear", "DenseCL - random init") == pytest.approx(
        (14.0, 2.0)
    )
    # unpaired, the rows' own spreads (2 and 1) would give a different figure
    assert demo.paired_margin(SEEDS, "linear", "MoCo-v2 - raw pixels")[1] == pytest.approx(1.0)


def test_targets_are_met_only_by_the_mean_and_beyond_twice_the_spread():
    lines = demo.target_lines(scores(30.0, 25.0, 18.0, 10.0), SEEDS)
    dense_random, moco_random, dense_moco = lines
    assert "+14.0 ± 2.0 over 3 seeds (this run +12.0): met." in dense_random
    assert "+8.0 ± 1.0 over 3 seeds (this run +7.0): not met." in moco_random  # under +10
    assert "+6.0 ± 1.0 over 3 seeds (this run +5.0): met." in dense_moco
    # gaps 0, 8, 3: the mean +3.7 clears +3, but not twice its spread (4.0)
    noisy = spread(
        {
            "DenseCL": [30.0, 32.0, 34.0],
            "MoCo-v2": [30.0, 24.0, 31.0],
            "random init": [18.0, 18.0, 18.0],
            "raw pixels": [10.0, 12.0, 11.0],
        }
    )
    gap_line = demo.target_lines(scores(30.0, 25.0, 18.0, 10.0), noisy)[2]
    assert "+3.7 ± 4.0 over 3 seeds" in gap_line and gap_line.endswith("not met.")


def test_without_the_benchmark_no_target_is_called_met():
    lines = demo.target_lines(scores(40.0, 25.0, 18.0, 10.0), None)
    assert all("not established" in line and " met" not in line for line in lines)


def test_the_shipped_seed_benchmark_is_readable_by_the_report():
    shipped = demo.read_spread()
    assert shipped is not None
    # measured on the demo's own recipe and length, which the report reads it against
    assert shipped["recipe"] is None and shipped["steps"] == demo.DEMO_STEPS
    for probe_rows in shipped["rows"].values():
        assert set(probe_rows) == {"DenseCL", "MoCo-v2", "random init", "raw pixels"}
        assert all(len(row["values"]) == shipped["seeds"] for row in probe_rows.values())
    text = demo.reading(scores(20.0, 20.0, 23.0, 13.0), shipped)
    assert text.count("seed-to-seed spread of this margin") == 2 * len(demo.COMPARISONS)
    assert len(demo.target_lines(scores(20.0, 20.0, 23.0, 13.0), shipped)) == len(demo.TARGETS)


def test_a_run_of_another_length_is_told_that_the_spread_is_not_its_own():
    measured = {**SEEDS, "steps": 300}
    assert "not the benchmark's 300" in demo.reading(scores(30, 25, 18, 10), measured, steps=50)
    assert "not the benchmark's" not in demo.reading(scores(30, 25, 18, 10), measured, steps=300)


def test_a_benchmark_of_another_probe_size_is_flagged():
    other = {**SEEDS, "probe_size": demo.PROBE_SIZE // 2}
    assert "describe the other probe" in demo.reading(scores(30, 25, 18, 10), other)
    same = {**SEEDS, "probe_size": demo.PROBE_SIZE}
    assert "describe the other probe" not in demo.reading(scores(30, 25, 18, 10), same)


def test_the_report_is_written_with_its_table_targets_and_pictures(tmp_path):
    rows = scores(20.0, 21.0, 23.0, 13.0)
    for row in rows.values():
        for probe in row.values():
            probe["pixel_accuracy"] = 75.0
    figures = {"loss": "l.png", "matches": "m.png", "pca_densecl": "d.png", "pca_mocov2": "p.png"}
    path = demo.write_report(tmp_path, rows, {"probes": 60.0}, 300, figures)
    text = path.read_text()
    assert "| DenseCL | 20.0 | 75.0 | 19.0 | 75.0 |" in text
    assert "The targets this demo is measured against" in text
    assert all(f"({name})" in text for name in figures.values())
