"""The raw-pixel baseline: the image's own pixels as "features", for a probe to beat.

A dense probe only means something if the pixels alone do not solve the task. :class:`RawPixels`
stands in for a backbone: each grid cell is the flattened RGB of one ``patch x patch`` block of
the normalised input, so a linear probe on it classifies raw pixel patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PIXELS = "pixels"
PATCH = 16  # the stride of C4, the finest level the demo probes


class RawPixels(nn.Module):
    """(B, 3, H, W) -> ``{"pixels": (B, 3 * patch**2, H / patch, W / patch)}``; no parameters."""

    default_levels = (PIXELS,)

    def __init__(self, patch: int = PATCH) -> None:
        super().__init__()
        self.patch = patch
        self.level_strides = {PIXELS: patch}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        p = self.patch
        blocks = F.unfold(x, kernel_size=p, stride=p)  # (B, 3 p^2, h/p * w/p)
        return {PIXELS: blocks.view(b, -1, h // p, w // p)}
