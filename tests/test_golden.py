"""Every method's training results against the golden record (tests/golden/record.json).

The runs are in float64, so one record holds on every machine (tests/golden/record.py says why).
A refactor must leave them unchanged to 1e-6; a change made on purpose regenerates the record in
its own commit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from densessl.registry import METHODS

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RUNS, read_results, run_method

RESULTS = read_results()


def mismatches(got: dict, want: dict) -> list[str]:
    """What of ``got`` differs from the recorded run ``want`` beyond 1e-6 (empty: a match)."""
    if len(got["losses"]) != len(want["losses"]):
        return [f"{len(got['losses'])} losses recorded against {len(want['losses'])}"]
    wrong = [
        f"loss of step {step}: {g!r} against {w!r}"
        for step, (g, w) in enumerate(zip(got["losses"], want["losses"], strict=True))
        if g != pytest.approx(w, rel=1e-6, abs=1e-6)
    ]
    if got["numel"] != want["numel"]:
        wrong.append(f"numel: {got['numel']} against {want['numel']}")
    wrong += [
        f"{key}: {got[key]!r} against {want[key]!r}"
        for key in ("sum", "abs_sum", "sq_sum")
        if got[key] != pytest.approx(want[key], rel=1e-6)
    ]
    return wrong


def test_the_record_covers_every_registered_method():
    import densessl.methods  # noqa: F401  (registers them)

    assert set(RUNS) == set(RESULTS) == set(METHODS.names())


def test_a_changed_run_fails_the_record():
    """The matching can fail: one loss moved by 1e-5 of itself, or the state's sum, does not
    match."""
    run = RESULTS["mocov2"]
    moved = {**run, "losses": [*run["losses"]]}
    moved["losses"][-1] += 1e-5 * max(1.0, abs(moved["losses"][-1]))
    assert mismatches(moved, run) and not mismatches(run, run)
    assert mismatches({**run, "sum": run["sum"] * (1 + 1e-5)}, run)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_training_matches_the_golden_record(name, tmp_path):
    wrong = mismatches(run_method(name, tmp_path), RESULTS[name])
    assert not wrong, f"{name} differs from the golden record: " + "; ".join(wrong[:4])
