"""Two torchrun agents as two "nodes" on one machine (``--nnodes 2 --nproc_per_node 1``, c10d
rendezvous on localhost, gloo): the job trains like one process on the whole batch, and only
global rank 0 writes a run folder. Each node is given its own ``--out`` path, as nodes with
their own local disks would have, so that a write by rank 1 would show as a second folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from densessl.cli import main
from densessl.runs import load_checkpoint

from conftest import TINY_FPN_RUN, free_port, tiny_overrides, write_scene_folder

pytestmark = [pytest.mark.dist, pytest.mark.slow]

# MoCo-v2 with synchronised BN: nothing a process draws for itself, so two processes on halves
# of the batch train as one process on all of it (to float rounding).
RUN = {"batch_norm": "sync", "batch_size": 8, "steps": 1}


def losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def two_nodes(outs, timeout: int = 600, resume: bool = False, method: str = "mocov2",
              values=None, env=None, **run) -> None:  # fmt: skip
    """One torchrun agent per node, each with ``--nnodes 2 --nproc_per_node 1`` and the same
    c10d rendezvous; node i gets ``--out outs[i]`` and ``values`` (default: the tiny MoCo run
    with ``RUN`` and ``run``)."""
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    agents = []
    for out in outs:
        start = ["--resume", "--out", str(out)] if resume else ["--method", method]
        given = values or tiny_overrides(out, **{**RUN, **run})[1:]  # the run folder is --out
        cli = ["-m", "densessl.cli", "pretrain", *start, *([] if resume else ["--out", str(out)]),
               *given]  # fmt: skip
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                   "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                   "--rdzv_id=densessl-two-nodes", *cli]  # fmt: skip
        agents.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True))  # fmt: skip
    for agent in agents:
        _, err = agent.communicate(timeout=timeout)
        assert agent.returncode == 0, err[-3000:]


def test_two_nodes_train_like_one_process_and_only_rank_0_writes(tmp_path):
    single = tmp_path / "single"
    assert main(["pretrain", "--method", "mocov2", *tiny_overrides(single, **RUN)]) == 0
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    two_nodes(nodes)
    written = [out for out in nodes if out.exists()]
    assert len(written) == 1  # global rank 0's folder; the other node wrote nothing
    run = written[0]
    # The DDP equality standard (test_ddp_every_method), one step: the loss to float rounding;
    # after the step, BN over 4 samples a process amplifies the summation order to about 1% of a
    # tensor, while a wiring error (a batch half lost, a wrong gather) moves it by ~100%.
    assert losses(run) == pytest.approx(losses(single), rel=1e-4)
    ours = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    theirs = load_checkpoint(single / "checkpoints" / "last.pt")["model"]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if value.is_floating_point():
            error = torch.linalg.vector_norm((ours[key] - value).double())
            assert error <= 1e-2 * (torch.linalg.vector_norm(value.double()) + 1e-3), key
        else:  # queue pointers, BN counters
            assert torch.equal(ours[key], value), key


def pretrain_one_process(out, resume: bool = False, **run) -> None:
    start = ["--resume", "--out", str(out)] if resume else ["--method", "mocov2", "--out", str(out)]
    assert main(["pretrain", *start, *tiny_overrides(out, **{**RUN, **run})[1:]]) == 0


def test_a_run_moves_between_two_nodes_and_one_with_the_same_global_batch(tmp_path):
    """Two nodes for a step, then one process resumes for a second, and the reverse: each
    continues from the other's checkpoint (step, queue, optimizer) and ends near a straight
    one-process run of two steps (the same DDP standard; here after two steps)."""
    straight = tmp_path / "straight"
    pretrain_one_process(straight, steps=2)
    shared = tmp_path / "two_then_one"  # one folder both nodes see, as on a shared disk
    two_nodes([shared, shared])
    pretrain_one_process(shared, resume=True, steps=2)
    back = tmp_path / "one_then_two"
    pretrain_one_process(back)
    two_nodes([back, back], resume=True, steps=2)
    want = losses(straight)
    for run in (shared, back):
        got = losses(run)
        assert len(got) == 2 and got[0] == pytest.approx(want[0], rel=1e-4)
        assert got[1] == pytest.approx(want[1], rel=1e-2)
        state = load_checkpoint(run / "checkpoints" / "last.pt")
        assert state["step"] == 2 and int(state["model"]["queue.ptr"]) == 0  # 2 x 8 keys of 16


# Logs which global rank runs SoCo's proposal search, in every process the agents start.
SEARCH_SPY = """
import os
import densessl.data.proposal_store as store
real = store.generate_proposals
def logged(*args, **kwargs):
    with open(os.environ["SEARCH_LOG"], "a") as log:
        log.write(os.environ.get("RANK", "-") + "\\n")
    return real(*args, **kwargs)
store.generate_proposals = logged
"""


def test_nodes_sharing_one_data_folder_search_proposals_once_on_rank_0(tmp_path):
    """SoCo on two nodes that see one data folder with no proposal cache yet: global rank 0
    searches and writes the cache beside the data while rank 1 waits at the barrier, then
    reads it; the run's boxes are the ones a single process finds."""
    data = write_scene_folder(tmp_path / "images", 8, 80, seed=3)
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SEARCH_SPY)
    log = tmp_path / "searches.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(spy), os.environ.get("PYTHONPATH", "")]),
           "SEARCH_LOG": str(log)}  # fmt: skip
    values = [f"{k}={v}" for k, v in {**TINY_FPN_RUN, "steps": 1, "data.path": data}.items()]
    shared = tmp_path / "run"
    two_nodes([shared, shared], method="soco", values=values, env=env)
    assert log.read_text().split() == ["0"]  # one search, by global rank 0
    from densessl.data.proposal_store import load_proposals
    from densessl.data.proposals import image_proposals
    from densessl.data.sources import ImageFolder

    images = ImageFolder(data)
    cached = load_proposals(data / ".densessl_proposals.npz", images)
    assert sorted(cached) == images.names
    for i, key in enumerate(images.names):  # the search run here, in this one process
        assert (cached[key] == image_proposals(images.load_image(i))).all()
