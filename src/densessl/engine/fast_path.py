"""Speed settings the engine applies to a built method: memory format and torch.compile.

Neither changes what is computed (to float rounding): ``channels_last`` lays 4-D weights and
images out as NHWC, which oneDNN and cuDNN convolve faster; ``compile`` hands each network part
to ``torch.compile``. Only the engine calls this.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from omegaconf import DictConfig
from torch import nn

from densessl.data.batch import Batch


def resolve_memory_format(cfg: DictConfig) -> torch.memory_format:
    """``memory_format``: ``auto`` is channels_last for CNN backbones, contiguous for ViTs
    (whose 4-D weight is the patch embedding alone, so nothing is gained)."""
    name = cfg.memory_format
    if name == "auto":
        name = "contiguous" if cfg.backbone.startswith("vit") else "channels_last"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def apply_memory_format(module: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """Lay out every 4-D parameter and buffer of ``module`` in ``memory_format``, in place."""
    return module.to(memory_format=memory_format)


def batch_in_memory_format(batch: Batch, memory_format: torch.memory_format) -> Batch:
    """The batch with its (B, 3, H, W) views in ``memory_format`` (a no-op when they are)."""
    if memory_format == torch.contiguous_format:
        return batch
    return replace(batch, views=[v.contiguous(memory_format=memory_format) for v in batch.views])


def compile_networks(method: nn.Module, **options) -> list[str]:
    """``torch.compile`` every part of the student and teacher encoders in place
    (``nn.Module.compile``: state dict unchanged) with ``options``; returns the parts' names."""
    compiled = []
    for network in ("student", "teacher"):
        encoder = getattr(method, network, None)
        if encoder is None:
            continue
        for name, part in encoder.named_children():
            part.compile(**options)
            compiled.append(f"{network}.{name}")
    return compiled
