"""Feature pyramid network over C2..C5 with batch norm, as SoCo pretrains it (P2..P5, no P6).

Lin et al., CVPR 2017, in the layout of SoCo's FPN (mmdet ``FPN``, ``norm_cfg=BN``,
``num_outs=4``) and torchvision's ``fasterrcnn_resnet50_fpn_v2`` neck; no activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = ("c2", "c3", "c4", "c5")


class ConvNorm(nn.Module):
    """Conv (no bias: the BN after it has one) -> BatchNorm2d [-> ReLU]; ``conv`` and ``norm``
    are renamed by the exporters to each library's convention."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = False):
        super().__init__()
        padding = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.relu(self.norm(self.conv(x)))


class FPN(nn.Module):
    """P2..P5 from C2..C5.

    ``lateral[i] = BN(conv1x1(C_{i+2}))``; top-down,
    ``lateral[i] += nearest_upsample(lateral[i+1])`` to the size of level i;
    ``P_{i+2} = BN(conv3x3(lateral[i]))``. Init: mmcv ``ConvModule``'s, as SoCo's FPN (Kaiming
    fan_out convs, BN weight 1, bias 0).

    Args:
        in_channels: channels of C2..C5, e.g. (256, 512, 1024, 2048) for ResNet-50.
        out_channels: channels of every P level (SoCo: 256).
    """

    def __init__(self, in_channels: tuple[int, ...] | list[int], out_channels: int = 256):
        super().__init__()
        if len(in_channels) != len(LEVELS):
            raise ValueError(f"FPN takes {len(LEVELS)} input levels, got {len(in_channels)}")
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(ConvNorm(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            ConvNorm(out_channels, out_channels, 3) for _ in in_channels
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """``{"c2": (B, C2, H/4, W/4), ..., "c5": (B, C5, H/32, W/32)}`` (other keys ignored) ->
        [P2, P3, P4, P5], each (B, out_channels, h_l, w_l) with the size of C_l."""
        pairs = zip(self.lateral_convs, LEVELS, strict=True)
        laterals = [conv(features[name]) for conv, name in pairs]
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + upsampled
        return [conv(x) for conv, x in zip(self.output_convs, laterals, strict=True)]
