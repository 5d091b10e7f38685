"""PixPro's pixel propagation module (PPM): each pixel becomes a similarity-weighted sum of the
transformed features of every pixel of its view.

Xie et al., "Propagate Yourself", CVPR 2021, https://arxiv.org/abs/2011.10043, Eq. 2-3;
reference zdaxie/PixPro ``contrast/models/PixPro.py`` (``featprop``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densessl.models.heads import DenseHead


class PixelPropagation(nn.Module):
    """y_i = Σ_j s(x_i, x_j) · ĝ(x_j),  s(x_i, x_j) = max(cos(x_i, x_j), clamp)^γ

    over all H·W pixels j of the same view (i included), with ĝ(x) = g(x)/‖g(x)‖ and no
    normalisation of the weights. The transform g has ``transform_layers`` layers: 0 the
    identity, 1 a 1×1 conv (the paper's choice), 2 conv-BN-ReLU-conv. γ sharpens the similarity
    (γ = 2 in the paper); clamping at 0 keeps dissimilar pixels from contributing.

    Args:
        dim: channels D of the projected map.
        transform_layers: 0, 1 or 2 (above).
        gamma: γ, the exponent of the similarity.
        clamp: the floor of the cosine before the power (reference default 0).
    """

    def __init__(self, dim: int, transform_layers: int = 1, gamma: float = 2.0, clamp: float = 0.0):
        super().__init__()
        if transform_layers == 0:
            self.transform: nn.Module = nn.Identity()
        elif transform_layers == 1:
            self.transform = nn.Conv2d(dim, dim, kernel_size=1)
        elif transform_layers == 2:
            self.transform = DenseHead(dim, dim, dim, batch_norm=True)
        else:
            raise ValueError(f"transform_layers must be 0, 1 or 2, not {transform_layers}")
        self.gamma = gamma
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) projected map -> (B, D, H, W) propagated map, not normalised."""
        batch, dim, height, width = x.shape
        values = F.normalize(self.transform(x), dim=1).flatten(2)  # (B, D, N), N = H·W
        pixels = F.normalize(x, dim=1).flatten(2)  # (B, D, N)
        similarity = torch.bmm(pixels.transpose(1, 2), pixels).clamp(min=self.clamp)  # (B, N, N)
        if self.gamma < 1:  # a fractional power of an exact 0 has an infinite gradient
            similarity = similarity + 1e-6
        weights = similarity**self.gamma  # weights[b, i, j] = s(x_i, x_j)
        return torch.bmm(values, weights.transpose(1, 2)).view(batch, dim, height, width)
