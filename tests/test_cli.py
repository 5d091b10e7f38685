"""What a user sees: errors on bad input, and a folder with broken files still trains."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import tiny_overrides, tree_state


def run_cli(*args: str, timeout: int = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "densessl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def refused_in(tmp_path, *args: str) -> str:
    """Run a command that must be refused from ``tmp_path``: exit code 2, one line on stderr,
    no traceback, and no file of ``tmp_path`` changed. Returns the line."""
    before = tree_state(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert tree_state(tmp_path) == before
    return lines[0]


def test_empty_folder_fails_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = refused_in(tmp_path, "pretrain", "--method", "densecl", "--data", str(empty), "--out",
                      str(tmp_path / "run"))  # fmt: skip
    assert str(empty) in line


def test_missing_folder_fails_with_one_line(tmp_path):
    line = refused_in(tmp_path, "pretrain", "--method", "densecl", "--data", str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in line


def test_unknown_override_is_a_clear_error(tmp_path):
    line = refused_in(tmp_path, "pretrain", "--method", "densecl", "method.no_such_key=1")
    assert "no_such_key" in line


def write_messy_folder(root):
    rng = np.random.default_rng(0)
    good = root / "good"
    good.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (72, 90, 3), dtype=np.uint8)).save(good / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 65535, (70, 70), dtype=np.uint16)).save(root / "deep.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "gray.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)).save(root / "rgba.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "tiny.png")
    full = (good / "0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    return {"truncated.jpg", "empty.jpg", "notes.jpg"}


def test_folder_with_broken_files_trains_and_counts_them(tmp_path):
    data = tmp_path / "data"
    broken = write_messy_folder(data)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "densecl", "--data", str(data), "--out", str(out)]
    # 13 files, batch 13 with 2 steps: every file is visited, broken ones are substituted.
    overrides = tiny_overrides(out, steps=2, batch_size=13)[1:]
    result = run_cli(*args, *overrides)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_files"] == 3
    assert {p.rsplit("/", 1)[-1] for p in summary["skipped_paths"]} == broken
    assert "skipped 3 unreadable" in result.stderr
    # One line per skipped file, no Python source line or warning class under it.
    warned = [line for line in result.stderr.splitlines() if "skipping unreadable" in line]
    assert len(warned) == 3 and all(w.startswith("densessl: warning: ") for w in warned)
    assert "Warning:" not in result.stderr and "self.dataset" not in result.stderr
