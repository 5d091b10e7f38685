"""Region features: RoIAlign on a pyramid level per box, and the 4conv1fc box head.

The head is detectron2's ``FastRCNNConvFCHead`` (4 convs, 1 fc, BN), as SoCo's and torchvision's
``fasterrcnn_resnet50_fpn_v2``, so it transfers to Mask R-CNN. Boxes (x0, y0, x1, y1) in view
pixels are scaled to each level by map size / view size per axis (as SoCo's normalised boxes)
and pooled with ``torchvision.ops.roi_align(aligned=True)``, adaptive sampling.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torchvision.ops import roi_align

from densessl.models.fpn import ConvNorm
from densessl.models.precision import at_least_float32


def _level_rois(
    boxes: torch.Tensor, image_index: torch.Tensor, level: torch.Tensor, view_size: tuple[int, int]
) -> torch.Tensor:
    """(R, 4) view-pixel boxes -> (R, 5) [image index, x0, y0, x1, y1] in ``level``'s pixels."""
    height, width = view_size
    scale = boxes.new_tensor([level.shape[-1] / width, level.shape[-2] / height]).repeat(2)
    return torch.cat([image_index[:, None].to(boxes.dtype), boxes * scale], dim=1)


def roi_align_levels(
    levels: list[torch.Tensor],
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    view_size: tuple[int, int],
    output_size: int = 7,
) -> torch.Tensor:
    """Pool every box from every level (the reference's way).

    Args:
        levels: L maps (N, C, h_l, w_l), e.g. [P2, P3, P4, P5].
        boxes: (R, 4) xyxy in view pixels.
        image_index: (R,) which image of the batch each box belongs to.
        output_size: side S of the pooled window (SoCo: 7).

    Returns:
        (L, R, C, S, S) float32, as the reference casts to (float64 in a float64 run).
    """
    levels = [at_least_float32(level) for level in levels]
    pooled = [
        roi_align(
            level,
            _level_rois(boxes.to(level.dtype), image_index, level, view_size),
            output_size,
            spatial_scale=1.0,
            sampling_ratio=-1,
            aligned=True,
        )
        for level in levels
    ]
    return torch.stack(pooled)


def roi_align_assigned(
    levels: list[torch.Tensor],
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    level_index: torch.Tensor,
    view_size: tuple[int, int],
    output_size: int = 7,
) -> torch.Tensor:
    """Pool each box from its assigned level only: ``roi_align_levels(...)[level_index[r], r]``
    at a quarter of the cost, (R, C, S, S) float32 (float64 in a float64 run). ``level_index``:
    (R,) integer level 0..L-1 of each box; the rest as there."""
    levels = [at_least_float32(level) for level in levels]
    channels, dtype = levels[0].shape[1], levels[0].dtype
    out = boxes.new_zeros((boxes.shape[0], channels, output_size, output_size), dtype=dtype)
    for index, level in enumerate(levels):
        rows = (level_index == index).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        rois = _level_rois(boxes[rows].to(dtype), image_index[rows], level, view_size)
        out[rows] = roi_align(
            level, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
    return out


class ConvFCBoxHead(nn.Module):
    """4 × [3x3 conv, BN, ReLU] -> flatten -> Linear -> ReLU ("4conv1fc"), PyTorch's default
    init as SoCo's head.

    Args:
        in_channels: channels of the pooled features (the FPN's, 256).
        roi_size: side S of the pooled windows (7).

    Attributes:
        convs: the :class:`ConvNorm` layers (``.conv``, ``.norm``).
        fc: the Linear (conv_channels·S² -> fc_dim).
    """

    def __init__(
        self,
        in_channels: int = 256,
        conv_channels: int = 256,
        fc_dim: int = 1024,
        roi_size: int = 7,
        num_convs: int = 4,
    ):
        super().__init__()
        widths = [in_channels] + [conv_channels] * num_convs
        self.convs = nn.Sequential(
            *(ConvNorm(a, b, 3, relu=True) for a, b in itertools.pairwise(widths))
        )
        self.fc = nn.Linear(conv_channels * roi_size * roi_size, fc_dim)
        self.out_dim = fc_dim

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        """(R, in_channels, S, S) -> (R, fc_dim)."""
        return torch.relu(self.fc(self.convs(rois).flatten(1)))
