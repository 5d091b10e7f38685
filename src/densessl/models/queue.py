"""MoCo-style FIFO queue of negative keys, kept as module buffers (saved with the model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeQueue(nn.Module):
    """Ring buffer of ``length`` L2-normalised keys of size ``dim``, started with random unit
    vectors (as the reference). The caller passes keys already gathered from all processes, so
    every rank's queue stays equal.

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
        """Overwrite the oldest ``M`` rows with ``keys`` (M, dim), M <= length, wrapping."""
        count = keys.shape[0]
        if count > self.length:
            raise ValueError(f"cannot enqueue {count} keys into a queue of length {self.length}")
        start = int(self.ptr)
        rows = (torch.arange(count, device=self.keys.device) + start) % self.length
        self.keys[rows] = keys.detach().to(self.keys.dtype)
        self.ptr.fill_((start + count) % self.length)

    def negatives(self) -> torch.Tensor:
        """The stored keys, (length, dim), detached, without a copy: methods enqueue only after
        backward, and an earlier enqueue trips autograd's version counter instead of silently
        using the new keys."""
        return self.keys.detach()
