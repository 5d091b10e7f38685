"""Process-group helpers: every collective in densessl goes through here.

Under ``torchrun`` :func:`init` creates the process group (NCCL with CUDA, else gloo); in a plain
process every helper is a no-op (``world_size() == 1``, ``all_gather(x) is x``).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as tdist


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (torchrun, SLURM wrappers...)."""
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    present = [k in os.environ for k in keys]
    if any(present) and not all(present):
        missing = [k for k, p in zip(keys, present, strict=True) if not p]
        raise RuntimeError(
            f"half-set distributed environment: {', '.join(missing)} missing. "
            "Start multi-process runs with torchrun."
        )
    return all(present) and int(os.environ["WORLD_SIZE"]) > 1


def init(device_type: str) -> None:
    """Create the process group if torchrun asked for one; otherwise do nothing."""
    if is_initialized() or not launched_by_torchrun():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    kwargs = {}
    if backend == "nccl":
        kwargs["device_id"] = torch.device("cuda", local_rank())
    tdist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def close() -> None:
    """Leave the process group together, once every rank has finished: a barrier, then
    ``destroy_process_group``. A gloo group left to the interpreter's exit can abort a rank
    (SIGABRT from its worker threads) after the run itself succeeded. Not called after an
    error: a rank that failed would leave the others waiting in the barrier."""
    if is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0, in rank order. No gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    tdist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; the backward is the same all-reduce (written out because
    ``torch.distributed.nn.functional.all_reduce`` is deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        tdist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable (used by synchronised batch norm)."""
    if world_size() == 1:
        return x
    return _AllReduceSum.apply(x.contiguous())


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (for logging and consistent decisions). Returns a new tensor."""
    x = x.detach().clone()
    if world_size() == 1:
        return x
    tdist.all_reduce(x)
    return x / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (a decision all ranks must share)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
    return bool(value.item())


@torch.no_grad()
def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s copy of ``x`` on every rank (in place, also returned)."""
    if world_size() > 1:
        tdist.broadcast(x, src)
    return x


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MoCo's shuffle-BN, first half: gather ``x`` (B, ...), permute the global batch by
    ``seed`` (same on every rank), hand each rank a slice, so a key's BN statistics come from
    other images than its query's. Identity in one process. Returns the local shuffled slice and
    the index that undoes the permutation."""
    if world_size() == 1:
        return x, None
    gathered = all_gather(x)
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(gathered.shape[0], generator=generator).to(x.device)
    local = permutation.view(world_size(), -1)[rank()]
    return gathered[local], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, unshuffle: torch.Tensor | None) -> torch.Tensor:
    """Second half of shuffle-BN: put this rank's outputs back in its original sample order."""
    if unshuffle is None:
        return y
    gathered = all_gather(y)
    return gathered[unshuffle.view(world_size(), -1)[rank()]]


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's picklable ``obj``, in rank order (for small run summaries)."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out
