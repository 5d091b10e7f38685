"""MoCo-style FIFO queue of negative keys, kept as module buffers (saved with the model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeQueue(nn.Module):
    """Ring buffer of ``length`` L2-normalised keys of size ``dim``.

    Initialised with random unit vectors (randn then L2-normalised per row, as the reference), so
    the first steps have negatives. Both buffers (``keys`` and ``ptr``) are in ``state_dict`` so a
    resumed run continues with the exact same queue.

    The queue does not gather across processes: the caller passes keys already gathered with
    ``densessl.dist.all_gather`` so every rank enqueues the same rows and the queues stay equal.

    Args:
        length: number of stored keys K.
        dim: key dimension D.

    Attributes:
        keys: (length, dim) buffer; row r is a stored key.
        ptr: () long buffer; the next row to overwrite (the oldest key).
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, length: int, dim: int):
        super().__init__()
        if length < 1 or dim < 1:
            raise ValueError(f"queue length and dim must be positive, got {length}, {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(length, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def length(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest ``M`` rows with ``keys``, wrapping around the end.

        Args:
            keys: (M, dim) with M <= length, L2-normalised, from all processes.
        """
        count = keys.shape[0]
        if count > self.length:
            raise ValueError(f"cannot enqueue {count} keys into a queue of length {self.length}")
        start = int(self.ptr)
        rows = (torch.arange(count, device=self.keys.device) + start) % self.length
        self.keys[rows] = keys.detach().to(self.keys.dtype)
        self.ptr.fill_((start + count) % self.length)

    def negatives(self) -> torch.Tensor:
        """The stored keys, (length, dim), detached, without a copy.

        Methods enqueue only after the backward pass (``after_step``), so no copy is needed (it
        cost 13 ms per queue per step on CPU at 65536 x 128). An ``enqueue`` before backward
        would change a tensor autograd saved; autograd's version counter, which the detached
        view shares, then raises instead of silently using the new keys.
        """
        return self.keys.detach()
