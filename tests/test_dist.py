"""Two processes under torchrun (gloo, CPU) train exactly like one process on the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from densessl.runs import load_checkpoint

from conftest import free_port, tiny_overrides

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def launch(out, processes: int) -> None:
    overrides = tiny_overrides(out, steps=3, batch_norm="sync")[1:]
    cli = ["-m", "densessl.cli", "pretrain", "--method", "densecl", "--out", str(out), *overrides]
    if processes == 1:
        command = [sys.executable, *cli]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            *cli,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    launch(one, 1)
    launch(two, 2)
    for a, b in zip(records(one), records(two), strict=True):
        assert a["step"] == b["step"]
        for key in ("loss", "loss_global", "loss_dense"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)
    model_one = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    model_two = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    for key in ("queue.keys", "dense_queue.keys", "queue.ptr", "dense_queue.ptr"):
        torch.testing.assert_close(model_one[key], model_two[key], atol=1e-4, rtol=1e-3)


def test_two_processes_with_shuffle_bn(tmp_path):
    """MoCo's shuffle-BN path (gather, permute, slice, un-shuffle) trains under torchrun."""
    out = tmp_path / "shuffle"
    overrides = tiny_overrides(out, steps=2, batch_norm="shuffle")[1:]
    cli = ["-m", "densessl.cli", "pretrain", "--method", "densecl", "--out", str(out), *overrides]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *cli]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(r["loss"] == r["loss"] for r in records(out))  # finite, logged on rank 0 only
    model = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    assert int(model["queue.ptr"]) == 16 % 16 and int(model["dense_queue.ptr"]) == 0
