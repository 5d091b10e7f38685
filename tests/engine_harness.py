"""Running the real engine from a test: each registered method's tiny golden-record run, steps
taken through ``open_session`` + ``train_step``, what the optimizer saw captured on the way, and
the same thing in several processes (``mp.spawn``, gloo, a free port) through the library's own
torchrun path (``densessl.dist.init`` reading RANK / WORLD_SIZE / MASTER_*)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.multiprocessing as mp

from densessl.config import build_config
from densessl.engine.session import open_session
from densessl.engine.step import step_state, train_step

from conftest import free_port

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RUNS  # the tiny run of every method


def tiny_config(name: str, out: Path, **extra):
    """Method ``name``'s golden-record run in ``out`` (no loader processes), with ``extra``."""
    from densessl.methods import get_method

    values = {**RUNS[name], "data.workers": 0, "log_every": 1, "checkpoint_every": 1000}
    values.update({"out": str(out), **extra})
    return build_config(get_method(name), overrides=[f"{k}={v}" for k, v in values.items()])


@dataclass
class Steps:
    """What ``steps`` engine steps did: each step's loss (mean over processes), the gradients
    the optimizer applied at each step (after DDP's averaging, clipping and freezing) and the
    method's full state afterwards; ``lrs`` are the learning rates the step left in each group."""

    losses: list[float] = field(default_factory=list)
    grads: list[dict[str, torch.Tensor]] = field(default_factory=list)
    lrs: list[list[float]] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def engine_steps(cfg, steps: int, before=None) -> Steps:
    """Open ``cfg``'s session and run ``steps`` optimizer steps with the engine's own step;
    ``before(method)`` (if given) sees the method before the first step."""
    s = open_session(cfg)
    out = Steps()

    def capture(optimizer, args, kwargs):
        named = s.method.named_parameters()
        out.grads.append({n: p.grad.clone() for n, p in named if p.grad is not None})
        out.lrs.append([group["lr"] for group in optimizer.param_groups])

    s.optimizer.register_step_pre_hook(capture)
    if before is not None:
        before(s.method)
    try:
        for step in range(steps):
            out.losses.append(train_step(s, step_state(step, s.schedules, s.run))[0])
    finally:
        s.close()
    out.state = {k: v.clone() for k, v in s.method.state_dict().items()}
    return out


def _entry(rank: int, world: int, port: int, worker, args) -> None:
    import torch.distributed as tdist

    from densessl import dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    dist.init("cpu")  # what torchrun's environment makes the engine do
    try:
        worker(rank, *args)
    finally:
        if tdist.is_initialized():  # the worker may have left it already (`densessl.cli.main`)
            tdist.destroy_process_group()


def in_processes(worker, *args, processes: int = 2) -> None:
    """Call ``worker(rank, *args)`` in ``processes`` processes of one gloo process group.
    ``worker`` must be a module-level function (it is pickled by name)."""
    mp.spawn(_entry, args=(processes, free_port(), worker, args), nprocs=processes, join=True)
