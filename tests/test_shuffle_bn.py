"""MoCo's shuffle-BN (``densessl.dist.batch_shuffle`` / ``batch_unshuffle``): the keys an encoder
computes on a shuffled global batch come back to each process in its own sample order, and the
shuffle really sends samples to other processes; in one process both halves are the identity.
MoCo-v2's and DenseCL's teacher pass uses both halves, so its keys line up with the queries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densessl import dist
from densessl.config import build_config
from densessl.methods import get_method
from densessl.methods.base import MethodContext

from engine_harness import in_processes

LOCAL_BATCH, SEEDS = 4, range(8)


def samples(rank: int) -> torch.Tensor:
    """Rank ``rank``'s batch: row i holds its global index, rank·B + i, in every column."""
    first = rank * LOCAL_BATCH
    return torch.arange(first, first + LOCAL_BATCH, dtype=torch.float64)[:, None].repeat(1, 3)


def per_sample(x: torch.Tensor) -> torch.Tensor:
    """Stands for the key encoder: any function of each sample alone."""
    return 2 * x + 1


def _shuffle_and_back(rank: int, out: str) -> None:
    x = samples(rank)
    results = []
    for seed in SEEDS:
        shuffled, unshuffle = dist.batch_shuffle(x, seed)
        results.append((shuffled, dist.batch_unshuffle(per_sample(shuffled), unshuffle)))
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.mark.dist
def test_unshuffling_restores_each_process_key_order(tmp_path):
    in_processes(_shuffle_and_back, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    moved = 0
    for seed in SEEDS:
        seen = []
        for rank in range(2):
            shuffled, keys = ranks[rank][seed]
            assert torch.equal(keys, per_sample(samples(rank))), (seed, rank)
            seen += shuffled[:, 0].tolist()
            moved += int((shuffled[:, 0] // LOCAL_BATCH != rank).sum())
        # The shuffled slices together hold every sample of the global batch exactly once.
        assert sorted(seen) == list(range(2 * LOCAL_BATCH)), seed
    assert moved > 0  # samples do go to the other process (their BN statistics are others')


def test_one_process_shuffle_is_the_identity():
    x = samples(0)
    shuffled, unshuffle = dist.batch_shuffle(x, seed=3)
    assert unshuffle is None and torch.equal(shuffled, x)
    assert torch.equal(dist.batch_unshuffle(per_sample(shuffled), unshuffle), per_sample(x))


def _method_keys(rank: int, name: str, out: str) -> None:
    torch.manual_seed(0)  # the same weights in both processes
    cls = get_method(name)
    ctx = MethodContext(backbone="resnet18", image_size=32, batch_norm="shuffle")
    method = cls(build_config(cls).method, ctx)
    method.teacher.eval()  # BN on running statistics: each key depends on its own image only
    images = torch.randn(LOCAL_BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(rank))
    with torch.no_grad():
        keys = method.encode_keys(images, step=0)  # through the shuffled global batch
        alone = method.encode(method.teacher, images)  # each process's images, in order
    torch.save((keys, alone), Path(out) / f"rank{rank}.pt")


@pytest.mark.dist
@pytest.mark.parametrize("name", ["mocov2", "densecl"])
def test_teacher_keys_come_back_in_the_query_order(tmp_path, name):
    """The key of image i is the teacher's encoding of image i, not of the image that took its
    place in the shuffle (which the per-process tests and a finite loss do not see)."""
    in_processes(_method_keys, name, str(tmp_path))
    for rank in range(2):
        keys, alone = torch.load(tmp_path / f"rank{rank}.pt")
        assert keys.keys() == alone.keys()
        for part in keys:
            assert torch.allclose(keys[part], alone[part], atol=1e-5), (rank, part)
