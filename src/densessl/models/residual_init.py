"""Zero-initialised residual branches ("zero-γ", Goyal et al. 2017): each ResNet block starts
as the identity. BYOL's and SoCo's references initialise their ResNets this way."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def zero_init_residual_(module: nn.Module) -> int:
    """Zero the scale of the last BN of every residual block, in place (``bn3`` of a bottleneck,
    ``bn2`` of a basic block), after any other re-initialisation; returns how many (0 for a ViT).
    """
    zeroed = 0
    for block in module.modules():
        last = {Bottleneck: "bn3", BasicBlock: "bn2"}.get(type(block))
        if last is not None:
            nn.init.zeros_(getattr(block, last).weight)
            zeroed += 1
    return zeroed
