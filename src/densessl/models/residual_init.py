"""Zero-initialised residual branches ("zero-γ", Goyal et al. 2017): each ResNet block starts
as the identity. BYOL's and SoCo's references initialise their ResNets this way."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def zero_init_residual_(module: nn.Module) -> int:
    """Set the scale of the last BatchNorm of every residual block in ``module`` to zero, in
    place: ``bn3`` of a bottleneck, ``bn2`` of a basic block (torchvision's block classes, which
    every densessl ResNet is made of). Biases stay zero, so each block's residual branch outputs
    0 at the start and the block passes its shortcut through.

    Call it after any other re-initialisation, which would overwrite it.

    Returns:
        The number of BatchNorm layers zeroed (0 for a backbone without such blocks, e.g. a ViT).
    """
    zeroed = 0
    for block in module.modules():
        last = {Bottleneck: "bn3", BasicBlock: "bn2"}.get(type(block))
        if last is not None:
            nn.init.zeros_(getattr(block, last).weight)
            zeroed += 1
    return zeroed
