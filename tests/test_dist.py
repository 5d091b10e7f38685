"""MoCo's shuffle-BN trains under torchrun itself (gloo, CPU), through the command line.

That two processes train exactly like one is checked for every method, faster, in
``test_ddp_every_method.py``; un-shuffling itself in ``test_shuffle_bn.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from densessl.runs import load_checkpoint

from conftest import free_port, tiny_overrides
from engine_harness import in_processes

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def pretrain_on_two_processes(method: str, out, overrides: list[str], timeout: int) -> None:
    """``densessl pretrain`` under ``torchrun --nproc_per_node=2`` (gloo, one thread each)."""
    cli = ["-m", "densessl.cli", "pretrain", "--method", method, "--out", str(out), *overrides]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *cli]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_with_shuffle_bn(tmp_path):
    """MoCo's shuffle-BN path (gather, permute, slice, un-shuffle) trains under torchrun."""
    out = tmp_path / "shuffle"
    overrides = tiny_overrides(out, steps=2, batch_norm="shuffle")[1:]
    pretrain_on_two_processes("densecl", out, overrides, timeout=600)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records(out))  # rank 0 logs
    model = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    assert int(model["queue.ptr"]) == 16 % 16 and int(model["dense_queue.ptr"]) == 0


def test_health_checks_between_log_steps_under_two_processes(tmp_path):
    """A check at a step that is not a log step writes a record whose terms are averaged over
    both processes: each must take part, though only rank 0 measures (it hung before)."""
    out = tmp_path / "health"
    overrides = tiny_overrides(out, steps=3, log_every=100, health_every=2)[1:]
    pretrain_on_two_processes("mocov2", out, overrides, timeout=300)
    logged = records(out)
    assert [r["step"] for r in logged] == [1, 2, 3]  # first step, the check at 2, the last
    assert [r["step"] for r in logged if "effective_rank" in r] == [2, 3]


def _pretrain_from_the_command_line(rank: int, out: str) -> None:
    from densessl import cli, dist

    argv = ["pretrain", "--method", "mocov2", "--out", out, *tiny_overrides(out, steps=1)[1:]]
    assert cli.main(argv) == 0
    assert not dist.is_initialized()


def test_a_finished_command_leaves_the_process_group_on_every_rank(tmp_path):
    """Each rank destroys the group before the interpreter exits: a gloo group left to the exit
    can abort a rank (SIGABRT) after a run that succeeded, and torchrun then reports it failed."""
    in_processes(_pretrain_from_the_command_line, str(tmp_path / "run"))
