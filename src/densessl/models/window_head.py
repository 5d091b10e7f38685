"""MCL's window head: a pyramid level cut into the windows of a montage's cells, embedded each.

Reference GuoQiushan/MCL ``DetConvGpNonLinearHead``. At level i, P(5 - i) of a montage is cut
into a ``2**i x 2**i`` grid of ``s x s`` windows (s = view side / 32) before the convs, so the
head sees no context across cells. Letters: M maps, C channels, g cells per side, D output width.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from densessl.models.fpn import ConvNorm


def cut_windows(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut (M, C, H, W) ``features`` into ``grid x grid`` (g) equal windows, row-major:
    (M·g², C, H/g, W/g), window ``m·g² + r·g + c`` is ``features[m, :, r·h:(r+1)·h, c·w:(c+1)·w]``,
    the order of :func:`densessl.data.montage.make_montage`'s ``sources[m, r, c]``."""
    maps, channels, height, width = features.shape
    if height % grid or width % grid:
        raise ValueError(f"a {height}x{width} map does not split into {grid}x{grid} windows")
    h, w = height // grid, width // grid
    windows = features.reshape(maps, channels, grid, h, grid, w).permute(0, 2, 4, 1, 3, 5)
    return windows.reshape(maps * grid * grid, channels, h, w)


class BoxHeadConvs(nn.Module):
    """The 3x3 conv tower of a detector's 4conv1fc box head, without its fc (MCL pretrains no
    fc; :mod:`densessl.export.detection_heads` fills a Mask R-CNN box head's convs with it).

    Attributes:
        convs: ``num_convs`` :class:`ConvNorm` (3x3 conv, BN, ReLU), as ``ConvFCBoxHead.convs``.
    """

    def __init__(self, in_channels: int = 256, conv_channels: int = 256, num_convs: int = 4):
        super().__init__()
        widths = [in_channels] + [conv_channels] * num_convs
        self.convs = nn.Sequential(
            *(ConvNorm(a, b, 3, relu=True) for a, b in itertools.pairwise(widths))
        )
        for module in self.modules():  # mmcv ConvModule's init, as the reference's head convs
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, C, s, s) -> (R, conv_channels, s, s)."""
        return self.convs(windows)


class WindowHead(nn.Module):
    """Per window: 4 x [3x3 conv, BN, ReLU] -> average pool -> Linear, BN, ReLU, Linear, BN; the
    last BN without affine, Linears Kaiming-normal (fan_in, relu) with zero bias, as the reference.

    Attributes:
        tower: the :class:`BoxHeadConvs` (exported as the box head's convs).
    """

    def __init__(
        self,
        in_channels: int = 256,
        conv_channels: int = 256,
        hidden_dim: int = 2048,
        out_dim: int = 256,
        num_convs: int = 4,
    ):
        super().__init__()
        self.tower = BoxHeadConvs(in_channels, conv_channels, num_convs)
        self.projector = nn.Sequential(
            nn.Linear(conv_channels, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
            nn.BatchNorm1d(out_dim, affine=False),
        )
        for module in self.projector:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def pool(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, C, s, s) windows -> (R, conv_channels): the conv tower, then the window mean."""
        return self.tower(windows).mean(dim=(2, 3))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, C, s, s) windows -> (R, D) embeddings (not normalised)."""
        return self.projector(self.pool(windows))
