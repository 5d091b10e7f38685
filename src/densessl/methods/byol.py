"""BYOL: bootstrap your own latent, image-level; also the pieces SoCo shares.

Paper: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, https://arxiv.org/abs/2006.07733. Reference: google-deepmind/deepmind-research
``byol/``; SoCo reuses its projector, predictor, loss and momentum rule. Letters: B images, D
projection width (256). Online f_θ, projector g_θ, predictor q_θ; target f_ξ, g_ξ an EMA copy
without predictor. For views v, v' of one image::

    p = q_θ(g_θ(f_θ(v)))                 online prediction        (B, D)
    z' = g_ξ(f_ξ(v'))                    target projection        (B, D), no gradient
    L = byol_loss(p, z') + byol_loss(p', z)    with byol_loss = mean(2 − 2·cos)

Projector and predictor: Linear(·, 4096) BN ReLU Linear(4096, 256), the last Linear without
bias; residual blocks start with their last BN scale at zero (as the reference). The target
follows ξ ← τ·ξ + (1 − τ)·θ with τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2.

Recipe (the reference's 300-epoch preset): LARS, lr 0.3 × batch/256, wd 1e-6, τ_base 0.99, 10
warm-up epochs, cosine; batch 4096, SyncBN (1000 epochs: ``byol_r50_in1k_1000ep``). Small-data
recipe: BENCHMARKS.md. Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densessl.config import lars_run
from densessl.data.batch import Batch
from densessl.data.views import ViewSpec, byol_views
from densessl.losses import byol_loss
from densessl.methods.base import CosineMomentumTeacher, LossOutput, MethodContext, StepState
from densessl.models import build_backbone
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.heads import byol_mlp
from densessl.models.residual_init import zero_init_residual_
from densessl.registry import METHODS


@dataclass
class BYOLConfig:
    name: str = "byol"
    dim: int = 256  # D, projection and prediction width (paper: 256)
    hidden_dim: int = 4096  # H, MLP hidden width (paper: 4096)
    momentum: float = 0.99  # τ_base, cosine to 1 over the run (reference 300-ep preset: 0.99)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (paper)
    # Every block's last BN scale starts at 0 (reference). A short run on a small set leaves
    # those scales near 0; turning it off scored best on CamVid (BENCHMARKS.md, BYOL family).
    zero_init_residual: bool = True


@METHODS.register("byol")
class BYOL(CosineMomentumTeacher):
    Config = BYOLConfig
    # The reference's 300-epoch preset (ResNet-50, 4096 images); the 1000-epoch one is a YAML.
    run_defaults = lars_run(4096, 300.0, base_lr=0.3, weight_decay=1e-6)
    export_network = "online"  # BYOL releases the online encoder

    def __init__(self, cfg: BYOLConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        backbone = build_backbone(ctx.backbone)
        if cfg.zero_init_residual:
            zero_init_residual_(backbone)  # the reference's blocks start as the identity
        channels = backbone.out_channels["c5"]
        projector = byol_mlp(channels, cfg.hidden_dim, cfg.dim)
        self.student = Encoder(backbone=backbone, projector=projector)
        self.predictor = byol_mlp(cfg.dim, cfg.hidden_dim, cfg.dim)
        self.teacher = make_teacher(self.student)

    def view_specs(self) -> list[ViewSpec]:
        return byol_views(self.ctx.image_size, self.cfg.crop_scale)

    @staticmethod
    def project(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) projections (not normalised)."""
        c5 = encoder.backbone(images)["c5"]  # (B, C, H/32, W/32)
        return encoder.projector(c5.mean(dim=(2, 3)))

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        first, second = batch.views
        # One pass per view, as the reference: BN statistics are per view.
        p1, p2 = (self.predictor(self.project(self.student, v)) for v in (first, second))
        with torch.no_grad():
            z1, z2 = (self.project(self.teacher, v) for v in (first, second))  # (B, D) each
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return LossOutput(loss, {"loss_image": loss.detach()})
