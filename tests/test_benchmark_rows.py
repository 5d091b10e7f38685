"""The CamVid benchmarks' bookkeeping, which lets one measurement be split into several short
jobs on a shared machine: each row is merged into one JSON file, and a pretraining run reused
by a later invocation keeps the time its own summary recorded (it used to be written as 0.0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from camvid_transfer import pretrain_minutes, save_row


def test_a_reused_run_keeps_the_minutes_of_its_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"seconds": 438.39, "steps": 300}))
    assert pretrain_minutes(tmp_path) == 7.3  # 438.39 s / 60 = 7.31 min
    assert pretrain_minutes(tmp_path / "never_trained") is None


def test_rows_of_separate_invocations_merge_into_one_file(tmp_path):
    results = tmp_path / "rows.json"
    save_row(results, "scratch", {"linear": 1.0})
    save_row(results, "start", {"linear": 2.0})
    save_row(results, "scratch", {"linear": 3.0})  # a re-run replaces only its own row
    assert json.loads(results.read_text()) == {"scratch": {"linear": 3.0}, "start": {"linear": 2.0}}
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporaries left
