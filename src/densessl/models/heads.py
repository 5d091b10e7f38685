"""Projection heads: a vector MLP (global), a 1x1-conv MLP (dense, per location) and DINO's head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from densessl.models.precision import at_least_float32


class MLPHead(nn.Module):
    """Linear -> [BN] -> ReLU -> Linear: MoCo-v2 / DenseCL global projection head.

    Args:
        batch_norm: BatchNorm1d after the hidden Linear (BYOL-style; none in MoCo-v2/DenseCL).
        kaiming_init: Kaiming-normal (fan_in, relu) weights and zero bias, as DenseCL's
            ``init_linear='kaiming'``; False keeps PyTorch's default (BYOL / SoCo).
        last_bias: give the output Linear a bias (BYOL's reference has none).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        batch_norm: bool = False,
        kaiming_init: bool = True,
        last_bias: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=last_bias)]
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if kaiming_init and isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim), not normalised."""
        return self.mlp(x)


class DenseHead(nn.Module):
    """Conv1x1 -> [BN] -> ReLU -> Conv1x1 per location: DenseCL's dense head (no BN) and PixPro's
    projector and predictor (``batch_norm=True``, MLP2d; statistics over B·H·W). PyTorch's
    default conv init, with biases, as both references."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_dim, hidden_dim, kernel_size=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, kernel_size=1)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim, H, W) -> (B, out_dim, H, W), not normalised."""
        return self.mlp(x)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation: row i is ``g_i · v_i / ‖v_i‖``.

    DINO's last layer. ``g`` starts at 1; ``learn_gain=False`` (``norm_last_layer=True``) keeps
    it there, so each output is a cosine times ‖x‖, which stabilises training (DINO).
    """

    def __init__(self, in_dim: int, out_dim: int, learn_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))  # v, the direction
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        self.gain = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return F.linear(x, self.gain * F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head: 3-layer MLP, L2-normalised bottleneck, weight-normalised layer.

    ``Linear(in, hidden) GELU Linear(hidden, hidden) GELU Linear(hidden, bottleneck)``, then
    ``normalize``, then :class:`WeightNormLinear` (bottleneck -> K); truncated-normal (std 0.02)
    weights, zero bias, no BatchNorm. Works on the last dimension: (B, D) or (B, N, D).

    Args:
        out_dim: output logits K (DINO: 65536; SelfPatch's patch head: 4096).
        norm_last_layer: keep the last layer's gain fixed at 1 (DINO's default True).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim) float32 logits; normalisation and last layer run in
        float32 with autocast off, so the τ_t softmax does not sharpen bf16/fp16 rounding."""
        hidden = self.mlp(x)  # (..., bottleneck), the autocast dtype
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.last_layer(F.normalize(at_least_float32(hidden), dim=-1))


def byol_mlp(in_dim: int, hidden_dim: int, out_dim: int, last_bias: bool = False) -> MLPHead:
    """BYOL's projector / predictor: Linear BN ReLU Linear, PyTorch default init, the last
    Linear without bias as in BYOL's reference (SoCo's port keeps one: ``last_bias=True``)."""
    return MLPHead(
        in_dim, hidden_dim, out_dim, batch_norm=True, kaiming_init=False, last_bias=last_bias
    )
