"""ResNet backbones that return their feature pyramid (C2..C5) instead of class logits."""

from __future__ import annotations

from functools import partial

import torch
import torchvision
from torch import nn

from densessl.models.timm_backbone import PREFIX as TIMM_PREFIX
from densessl.models.timm_backbone import build_timm_backbone
from densessl.registry import BACKBONES

# Output channels of layer1..layer4: basic blocks (R18/34) vs bottlenecks (R50/101, 4x expansion).
_BASIC_CHANNELS = {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
_BOTTLENECK_CHANNELS = {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}
_ARCHS = {
    "resnet18": _BASIC_CHANNELS,
    "resnet34": _BASIC_CHANNELS,
    "resnet50": _BOTTLENECK_CHANNELS,
    "resnet101": _BOTTLENECK_CHANNELS,
}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``, returning C2..C5.

    Keys are torchvision's minus ``fc.*``, so exports load without a key map.

    Args:
        arch: "resnet18", "resnet34", "resnet50" or "resnet101".
    """

    def __init__(self, arch: str):
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown ResNet arch {arch!r}; known: {', '.join(_ARCHS)}")
        self.arch = arch
        self.out_channels: dict[str, int] = dict(_ARCHS[arch])
        # weights=None: random init, nothing is downloaded.
        net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=False)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> ``{"c2": (B, C2, H/4, W/4), "c3": (B, C3, H/8, W/8), "c4": (B, C4,
        H/16, W/16), "c5": (B, C5, H/32, W/32)}`` (sizes rounded up by the strided convs)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}


for _arch in _ARCHS:
    # The class itself, bound to its arch name: build_backbone(name, **kwargs) -> ResNetBackbone.
    BACKBONES.register(_arch)(partial(ResNetBackbone, _arch))


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build the backbone registered as ``name`` (e.g. "resnet50") with ``kwargs``; any
    ``"timm/<model>"`` name builds that timm CNN (:mod:`densessl.models.timm_backbone`)."""
    if name.startswith(TIMM_PREFIX):
        return build_timm_backbone(name, **kwargs)
    return BACKBONES.get(name)(**kwargs)
