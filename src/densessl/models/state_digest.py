"""A content digest of a module's weights, for keys that must change when any weight does: the
frozen-feature cache and a fine-tune's saved-state fingerprint."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def state_digest(module: nn.Module) -> str:
    """SHA-256 over ``module.state_dict()`` in order: each entry's name, dtype, shape and raw
    bytes. Two modules share a digest only if every tensor is equal bit for bit (and named and
    shaped alike); the device does not enter it."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
