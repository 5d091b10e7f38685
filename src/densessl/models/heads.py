"""Projection heads: a vector MLP (global) and a 1x1-conv MLP (dense)."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Linear -> [BN] -> ReLU -> Linear: MoCo-v2 / DenseCL global projection head.

    Linear weights get Kaiming-normal (fan_in, relu) and zero bias, as the DenseCL reference's
    ``init_linear='kaiming'``. ``batch_norm=True`` inserts a BatchNorm1d after the hidden Linear
    (BYOL-style projectors); the reference MoCo-v2/DenseCL heads have none.

    Args:
        in_dim: input features C.
        hidden_dim: hidden width.
        out_dim: output features D.
        batch_norm: add BatchNorm1d after the hidden Linear.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project vectors.

        Args:
            x: (B, in_dim).

        Returns:
            (B, out_dim), not normalised.
        """
        return self.mlp(x)


class DenseHead(nn.Module):
    """Conv1x1 -> ReLU -> Conv1x1: DenseCL's dense projection head, applied per location.

    The convs keep PyTorch's default init on purpose: the DenseCL reference's init helper touches
    only Linear and norm layers, so its dense head is default-initialised while its global head is
    Kaiming (an asymmetry we reproduce).

    Args:
        in_dim: input channels C.
        hidden_dim: hidden channels.
        out_dim: output channels D.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project every location.

        Args:
            x: (B, in_dim, H, W).

        Returns:
            (B, out_dim, H, W), not normalised.
        """
        return self.mlp(x)
