"""PixPro: pixel-to-propagation consistency, with an optional BYOL instance branch.

Paper: Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual
Representation Learning", CVPR 2021, https://arxiv.org/abs/2011.10043. Reference: zdaxie/PixPro
@ e390d6b (``contrast/models/PixPro.py``, ``tools/pixpro_base_r50_100ep.sh``).

Online: backbone f_θ, projector g_θ (1×1-conv MLP C-4096-256, BN), propagation module PPM; the
target f_ξ, g_ξ is their EMA copy. For views v, v' of one image, N = h·w pixels of C5::

    x  = g_θ(f_θ(v))     (B, D, h, w);   y = PPM(x),  y_i = Σ_j max(cos(x_i, x_j), 0)^γ · ĝ(x_j)
    x' = g_ξ(f_ξ(v'))    target of the other view, no gradient
    L  = pixpro_loss(y, x', m) + pixpro_loss(y', x, mᵀ)   (+ α · BYOL on pooled instance heads)

m: pixel pairs whose bin centres, mapped into the source image by the batch's crop geometry, lie
within T = 0.7 bin diagonals; pixpro_loss = −2 · mean cosine over each image's pairs. τ: cosine
from 0.99 to 1. Recipe: LARS 1.0 × batch/256, wd 1e-5, 5 warm-up epochs, batch 1024, 224 px.

Deviations from the reference: docs/deviations.md ("PixPro").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densessl.config import lars_run
from densessl.data.batch import Batch
from densessl.data.views import ViewSpec, byol_views
from densessl.losses import byol_loss, pixpro_loss
from densessl.methods.base import CosineMomentumTeacher, LossOutput, MethodContext, StepState
from densessl.models import build_backbone
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.heads import DenseHead
from densessl.models.outputs import dense_level
from densessl.models.pixel_pairs import crop_coordinates, positive_pairs
from densessl.models.propagation import PixelPropagation
from densessl.models.residual_init import zero_init_residual_
from densessl.registry import METHODS


@dataclass
class PixProConfig:
    name: str = "pixpro"
    dim: int = 256  # D, projector output (reference: 256)
    hidden_dim: int = 4096  # H, projector and predictor hidden width (reference: 4096)
    momentum: float = 0.99  # τ_base, cosine to 1 over the run (reference: 0.99)
    pos_ratio: float = 0.7  # T, positive-pair distance in bin diagonals (paper: 0.7)
    gamma: float = 2.0  # γ, sharpness of the PPM similarity (paper: 2)
    clamp: float = 0.0  # floor of the PPM cosine before the power (reference: 0)
    transform_layers: int = 1  # layers of the PPM transform g: 0, 1 or 2 (paper: 1)
    instance_weight: float = 0.0  # α of the instance branch; 0 = PixPro alone (released runs)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (reference)
    zero_init_residual: bool = True  # every block's last BN scale starts at 0 (reference)


@METHODS.register("pixpro")
class PixPro(CosineMomentumTeacher):
    Config = PixProConfig
    # tools/pixpro_base_r50_100ep.sh: 8 GPUs x 128 images, LARS base lr 1.0, wd 1e-5.
    run_defaults = lars_run(1024, 100.0, base_lr=1.0, weight_decay=1e-5, warmup_epochs=5.0,
                            min_lr=1e-6)  # fmt: skip
    export_network = "online"  # the reference's checkpoints hold the online encoder

    def __init__(self, cfg: PixProConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        backbone = build_backbone(ctx.backbone)
        if cfg.zero_init_residual:
            zero_init_residual_(backbone)
        channels = backbone.out_channels[dense_level(backbone)]
        mlp = lambda width: DenseHead(width, cfg.hidden_dim, cfg.dim, batch_norm=True)  # noqa: E731
        parts = {"backbone": backbone, "projector": mlp(channels)}
        if cfg.instance_weight > 0:
            parts["instance_projector"] = mlp(channels)
            self.predictor = mlp(cfg.dim)
        self.student = Encoder(**parts)
        self.propagation = PixelPropagation(cfg.dim, cfg.transform_layers, cfg.gamma, cfg.clamp)
        self.teacher = make_teacher(self.student)

    def view_specs(self) -> list[ViewSpec]:
        return byol_views(self.ctx.image_size, self.cfg.crop_scale)

    def encode(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> "pixels" (B, D, h, w) projections, and "instance" (B, D, h, w) with
        the instance branch; not normalised."""
        c5 = encoder.backbone(images)[dense_level(encoder.backbone)]  # (B, C, h, w)
        out = {"pixels": encoder.projector(c5)}
        if self.cfg.instance_weight > 0:
            out["instance"] = encoder.instance_projector(c5)
        return out

    def projections(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's pixel projections, one row per pixel: (B h w, D)."""
        return self.encode(self.teacher, images)["pixels"].flatten(2).transpose(1, 2).flatten(0, 1)

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        coords = [
            crop_coordinates(batch.crop_boxes[:, v], batch.flipped[:, v], batch.source_sizes)
            for v in range(2)
        ]
        # One pass per view, as the reference: BN statistics are per view.
        online = [self.encode(self.student, view) for view in batch.views]
        with torch.no_grad():
            target = [self.encode(self.teacher, view) for view in batch.views]
        grids = [tuple(out["pixels"].shape[-2:]) for out in online]
        pairs = positive_pairs(coords[0], coords[1], grids[0], grids[1], self.cfg.pos_ratio)
        propagated = [self.propagation(out["pixels"]) for out in online]
        flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  (B, D, h, w) -> (B, N, D)
        loss_pixel = pixpro_loss(flat(propagated[0]), flat(target[1]["pixels"]), pairs)
        loss_pixel = loss_pixel + pixpro_loss(
            flat(propagated[1]), flat(target[0]["pixels"]), pairs.transpose(1, 2)
        )
        logs = {"loss_pixel": loss_pixel.detach()}
        loss = loss_pixel
        if self.cfg.instance_weight > 0:
            pooled = lambda t: t.mean(dim=(2, 3))  # noqa: E731  (B, D, h, w) -> (B, D)
            p1, p2 = (pooled(self.predictor(out["instance"])) for out in online)
            z1, z2 = (pooled(out["instance"]) for out in target)
            loss_instance = byol_loss(p1, z2) + byol_loss(p2, z1)
            loss = loss + self.cfg.instance_weight * loss_instance
            logs["loss_instance"] = loss_instance.detach()
        return LossOutput(loss, logs)
