"""Every method's training results against the golden record (tests/golden/record.json).

A refactor must leave them unchanged to 1e-6, on the record of some machine (one per CPU vendor:
their rounding differs, and ten tiny-batch steps amplify it); a change made on purpose
regenerates the record in its own commit (see tests/golden/record.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from densessl.registry import METHODS

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RUNS, read_records, run_method, this_machine

RECORDS = read_records()


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
    """Each method in some machine's entry (a method just added has only its author's)."""
    import densessl.methods  # noqa: F401  (registers them)

    assert set(RUNS) == set(METHODS.names())
    assert set().union(*RECORDS.values()) == set(RUNS)
    assert all(set(runs) <= set(RUNS) for runs in RECORDS.values())


def test_a_changed_run_matches_no_record():
    """The matching can fail: a run with one loss moved by 1e-5 matches none of the records."""
    entries = [runs["mocov2"] for runs in RECORDS.values() if "mocov2" in runs]
    for run in entries:
        moved = {**run, "losses": [*run["losses"]]}
        moved["losses"][-1] += 1e-5 * max(1.0, abs(moved["losses"][-1]))
        assert all(mismatches(moved, other) for other in entries)
        assert not mismatches(run, run)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_training_matches_the_golden_record(name, tmp_path):
    got = run_method(name, tmp_path)
    report = {m: mismatches(got, runs[name]) for m, runs in RECORDS.items() if name in runs}
    if any(not wrong for wrong in report.values()):
        return
    # Show the differences from this machine's own entry where there is one.
    machine = this_machine() if this_machine() in report else next(iter(report))
    pytest.fail(
        f"{name} matches none of the golden records ({', '.join(report)}); against {machine}'s: "
        + "; ".join(report[machine][:4])
        + (
            f". No entry for this machine ({this_machine()}): if the code is unchanged, add one "
            "with `python tests/golden/record.py --write`"
            if this_machine() not in report
            else ""
        )
    )
