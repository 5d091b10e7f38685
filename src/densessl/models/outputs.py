"""Which backbone output a method reads as its dense map and as its global vector.

CNN backbones (ResNets, timm CNNs) return ``{"c2": ..., "c5": ...}``; ViTs return
``{"patch": (B, D, h, w)}`` plus ``{"cls": (B, D)}`` with a class token. Methods written for C5
(MoCo-v2, DenseCL) read the last map through here, so they run on either.
"""

from __future__ import annotations

import torch
from torch import nn


def dense_level(backbone: nn.Module) -> str:
    """The name of the backbone's last dense map: ``"c5"`` (CNNs) or ``"patch"`` (ViTs)."""
    return "c5" if "c5" in backbone.out_channels else "patch"


def global_vector(outputs: dict[str, torch.Tensor], level: str) -> torch.Tensor:
    """(B, C) image vector: the class token when there is one, else the mean of the dense map
    ``outputs[level]`` (B, C, h, w) over its cells (CNN global average pooling)."""
    if "cls" in outputs:
        return outputs["cls"]
    return outputs[level].mean(dim=(2, 3))
