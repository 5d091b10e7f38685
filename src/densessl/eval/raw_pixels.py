"""The raw-pixel baseline: the image's own pixels as "features", for a probe to beat.

A dense probe on a pretrained backbone only means something if the task is not solved by the
pixels themselves. :class:`RawPixels` stands in for a backbone: each cell of its grid is the
flattened RGB values of one ``patch x patch`` block of the (normalised) input, so a linear
probe on it is a linear classifier of raw pixel patches at the same grid as the backbone's
stride-16 level. On data whose classes are carried by colour, it scores high; on the aerial
scenes, whose colours are drawn independently of the class, it should stay near chance.
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
