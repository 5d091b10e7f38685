"""A batch sampler whose position is a pure function of the step, so resume is exact.

Global micro-batch ``g`` lies in epoch ``g // batches_per_epoch``, whose order is a permutation
drawn from ``(seed, epoch)``; it is split into contiguous slices, one per rank. So 2 processes see
what 1 process sees at the same global batch, and a resume at step ``s`` continues from
micro-batch ``s * accum_steps`` without state. Items are ``(epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from densessl.errors import DataError


def check_enough_images(dataset_size: int, global_batch: int) -> None:
    """Raise DataError when one (drop-last) batch cannot be filled."""
    if dataset_size < global_batch:
        raise DataError(
            f"the dataset has {dataset_size} images, fewer than one batch of {global_batch}; "
            "lower --batch-size or add images"
        )


class ResumableBatchSampler:
    """Infinite stream of this process's share of each global micro-batch.

    Args:
        global_batch: samples per micro-batch over all processes (drop-last epochs).
        start_batch: index of the first global micro-batch to produce.
    """

    def __init__(
        self,
        dataset_size: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_batch: int = 0,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch {global_batch} is not divisible by {world_size} processes")
        check_enough_images(dataset_size, global_batch)
        self.dataset_size = dataset_size
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.seed = seed
        self.start_batch = start_batch
        self.batches_per_epoch = dataset_size // global_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = self.start_batch
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            if g // self.batches_per_epoch != epoch:
                epoch = g // self.batches_per_epoch
                order = self.epoch_order(epoch)
            first = (g % self.batches_per_epoch) * self.global_batch + self.rank * self.local_batch
            yield [(epoch, int(i)) for i in order[first : first + self.local_batch]]
            g += 1
