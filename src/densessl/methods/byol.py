"""BYOL: bootstrap your own latent, image-level; also the pieces SoCo shares.

Paper: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, https://arxiv.org/abs/2006.07733. Reference: google-deepmind/deepmind-research
``byol/`` (JAX); SoCo (hologerry/SoCo) reuses its projector, predictor, loss and momentum rule.

Letters: B images, C backbone channels, D projection width (256), H hidden width (4096).

Objective. Online network f_θ (backbone, projector g_θ) with predictor q_θ; target f_ξ, g_ξ an
EMA copy without predictor. For views v, v' of one image::

    p = q_θ(g_θ(f_θ(v)))                 online prediction        (B, D)
    z' = g_ξ(f_ξ(v'))                    target projection        (B, D), no gradient
    L = byol_loss(p, z') + byol_loss(p', z)    with byol_loss = mean(2 − 2·cos)

Projector and predictor: Linear(·, 4096) BN ReLU Linear(4096, 256). The target follows
ξ ← τ·ξ + (1 − τ)·θ with τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, τ_base = 0.996 (paper).
Recipe (engine): LARS, lr 0.2 × batch/256, weight decay 1.5e-6, biases and norms excluded from
decay and LARS adaptation, 10 warm-up epochs then cosine; batch 4096, SyncBN.

Deviations from the reference:
- The momentum update runs in :meth:`after_step` with τ(k + 1) after optimizer step k, i.e. the
  target used at step k + 1 is τ(k + 1)·ξ_k + (1 − τ(k + 1))·θ_{k+1}, which is what updating
  before the target forward of step k + 1 gives (SoCo's order).
- Views come from :mod:`densessl.data.views` (bilinear crops, batched photometric ops, our blur
  kernel radius ceil(3σ) instead of BYOL's fixed 23-px kernel).
- Linear layers keep PyTorch's default init (as SoCo's PyTorch port); the JAX reference uses
  truncated-normal fan-in init.
- The learning-rate warm-up starts at lr/warmup (the engine's shared schedule), not at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from densessl.data.batch import Batch
from densessl.data.views import ViewSpec, byol_views
from densessl.engine.schedules import warmup_cosine
from densessl.losses import byol_loss
from densessl.methods.base import LossOutput, Method, MethodContext
from densessl.models import build_backbone
from densessl.models.ema import ema_update_, make_teacher
from densessl.models.heads import MLPHead
from densessl.registry import METHODS

# Engine settings of the BYOL paper (ResNet-50, 4096 images, 1000 epochs; 300 in ablations).
BYOL_OPTIM = {
    "name": "lars",
    "base_lr": 0.2,  # per 256 images, linear scaling rule
    "weight_decay": 1.5e-6,
    "decay_norm_and_bias": False,  # biases and BN: no decay, no LARS adaptation
    "warmup_epochs": 10,
}


@dataclass
class BYOLConfig:
    name: str = "byol"
    dim: int = 256  # D, projection and prediction width (paper: 256)
    hidden_dim: int = 4096  # H, MLP hidden width (paper: 4096)
    momentum: float = 0.996  # τ_base, cosine to 1 over the run (paper: 0.996)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (paper)


def byol_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> MLPHead:
    """BYOL's projector / predictor: Linear BN ReLU Linear, PyTorch default init."""
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=True, kaiming_init=False)


def byol_momentum(step: int, total_steps: int, base: float) -> float:
    """τ at ``step``: 1 − (1 − base)·(cos(π·step/total) + 1)/2, from ``base`` to 1."""
    return warmup_cosine(step, total_steps, base, 1.0)


class ProjectedEncoder(nn.Module):
    """Backbone plus projector: the part of BYOL's online network the target copies."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) projections (not normalised)."""
        c5 = self.backbone(images)["c5"]  # (B, C, H/32, W/32)
        return self.projector(c5.mean(dim=(2, 3)))


@METHODS.register("byol")
class BYOL(Method):
    Config = BYOLConfig
    recipe: ClassVar[dict[str, Any]] = {
        "backbone": "resnet50",
        "batch_size": 4096,
        "epochs": 300,
        "batch_norm": "sync",
        "optim": BYOL_OPTIM,
    }
    export_network = "online"  # BYOL releases the online encoder

    def __init__(self, cfg: BYOLConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        backbone = build_backbone(ctx.backbone)
        channels = backbone.out_channels["c5"]
        self.student = ProjectedEncoder(backbone, byol_mlp(channels, cfg.hidden_dim, cfg.dim))
        self.predictor = byol_mlp(cfg.dim, cfg.hidden_dim, cfg.dim)
        self.teacher = make_teacher(self.student)

    def view_specs(self) -> list[ViewSpec]:
        return byol_views(self.ctx.image_size, self.cfg.crop_scale)

    def momentum_at(self, step: int) -> float:
        return byol_momentum(step, self.ctx.total_steps, self.cfg.momentum)

    def forward(self, batch: Batch, step: int) -> LossOutput:
        first, second = batch.views
        # One pass per view, as the reference: BN statistics are per view.
        p1, p2 = (self.predictor(self.student(v)) for v in (first, second))  # (B, D) each
        with torch.no_grad():
            z1, z2 = (self.teacher(v) for v in (first, second))
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return LossOutput(loss, {"loss_image": loss.detach()})

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        ema_update_(self.teacher, self.student, self.momentum_at(step + 1))

    def exportable(self, network: str | None = None) -> dict[str, nn.Module]:
        encoder = self.teacher if (network or self.export_network) == "teacher" else self.student
        return {"backbone": encoder.backbone}
