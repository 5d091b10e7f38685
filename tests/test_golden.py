"""Every method's training results against the golden record (tests/golden/record.json).

A refactor must leave them unchanged to 1e-6; a change made on purpose regenerates the record in
its own commit (see tests/golden/record.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from densessl.registry import METHODS

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RECORD, RUNS, run_method

EXPECTED = json.loads(RECORD.read_text())


def test_the_record_covers_every_registered_method():
    import densessl.methods  # noqa: F401  (registers them)

    assert set(EXPECTED) == set(RUNS) == set(METHODS.names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_training_matches_the_golden_record(name, tmp_path):
    got, want = run_method(name, tmp_path), EXPECTED[name]
    assert len(got["losses"]) == len(want["losses"])
    assert got["losses"] == pytest.approx(want["losses"], rel=1e-6, abs=1e-6)
    assert got["numel"] == want["numel"]
    for key in ("sum", "abs_sum", "sq_sum"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
