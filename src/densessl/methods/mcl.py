"""MCL: multi-level contrastive learning on image montages, pretraining backbone, FPN and head.

Paper: Guo et al., "Multi-Level Contrastive Learning for Dense Prediction Task", 2023,
https://arxiv.org/abs/2304.02010. Reference: GuoQiushan/MCL @ 1912aa9
(openselfsup/models/mcl.py, necks.py, heads/latent_pred_head.py, configs/selfsup/MCL/).
Letters: B images per process, G processes, L levels (4), D width (256), S view side, s = S/32.

Views (:mod:`densessl.data.montage`): 2L views per image, BYOL's asymmetric colour; views
0..L-1 branch q, L..2L-1 branch k. Level i shrinks its view by 2^i and tiles 2^i x 2^i montages.

Network (online θ; the target ξ is an EMA copy of all but the predictors)::

    P2..P5 = FPN(ResNet(x))            every level's inputs of a branch in one pass, BN
    u = WindowHead(cut_windows(P(5-i), 2^i))      one s x s window per montage cell
        WindowHead = 4 x [conv3x3-256, BN, ReLU] -> mean -> 256-2048(BN, ReLU)-256 -> BN (no affine)
    p = Pred_i(u)                      one predictor per level: 256-2048(BN, ReLU)-256
    z = normalise(WindowHead_ξ(P5_ξ(full view)))   the target: level 0 of the other branch

Loss (:func:`densessl.losses.mcl_cell_loss`), targets gathered from all processes, a cell's
label its source image's global index (local index + B·rank)::

    L = Σ_i w_i · [ 2T·CE_T(q cells at level i, Z_k) + 2T·CE_T(k cells at level i, Z_q) ]
    w = (1/2, 1/4, 1/8, 1/8), T = 1

Target momentum as BYOL's. Recipe: LARS (lr in the momentum buffer), lr 1.0 × batch/256, cosine
times a 10-epoch warm-up factor from 1e-4, wd 1e-5, grad norm clipped at 500; batch 4096, 100
epochs, SyncBN, fp16. Exported: online backbone, FPN, the head's 4 convs. ``mcl_small_data``:
BYOL's recipe, clip 500. Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from densessl import dist
from densessl.config import lars_run
from densessl.data.batch import Batch
from densessl.data.montage import mcl_level
from densessl.data.views import ViewSpec, byol_views
from densessl.errors import ConfigError
from densessl.losses import mcl_cell_loss
from densessl.methods.base import (
    CosineMomentumTeacher,
    LossOutput,
    MethodContext,
    StepState,
    keep_in_graph,
)
from densessl.models import build_backbone
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.fpn import FPN, LEVELS
from densessl.models.heads import MLPHead
from densessl.models.precision import at_least_float32
from densessl.models.window_head import WindowHead, cut_windows
from densessl.registry import METHODS

HEAD_INPUTS = ("cells", "all")
STRIDE = 32  # of P5: the window side is the view side over this


@dataclass
class MCLConfig:
    name: str = "mcl"
    dim: int = 256  # D, embedding and prediction width (code: 256)
    hidden_dim: int = 2048  # head-MLP and predictor hidden width (code: 2048)
    fpn_channels: int = 256  # FPN output channels (code: 256)
    head_channels: int = 256  # channels of the head's convs (code: the FPN's 256)
    head_convs: int = 4  # convs in the window head (code: stacked_convs=4)
    levels: int = 4  # montage levels 0..levels-1 (code: 4; the paper's figure draws 3)
    level_weights: tuple[float, ...] = (0.5, 0.25, 0.125, 0.125)  # w_i (code)
    temperature: float = 1.0  # T (code: 1.0)
    momentum: float = 0.99  # τ_base, cosine to 1 (code: base_momentum 0.99)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range (code)
    antialias: bool = False  # anti-aliased down-sampling instead of the reference's nearest
    head_inputs: str = "cells"  # cells | all (the reference's head over every level, see above)


def predictor(dim: int, hidden_dim: int) -> MLPHead:
    """One level's predictor: Linear BN ReLU Linear, N(0, 0.01) weights and zero bias (the
    reference's ``init_linear='normal'``)."""
    head = MLPHead(dim, hidden_dim, dim, batch_norm=True, kaiming_init=False)
    for module in head.mlp:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    return head


def cross_branch_loss(
    predictions: list[torch.Tensor],
    sources: list[torch.Tensor],
    targets: torch.Tensor,
    weights: tuple[float, ...],
    temperature: float,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One branch's cells against the other branch's full-view targets of all processes: the
    weighted sum over levels (scalar) and the unweighted loss of each level.

    Args:
        predictions: per level, (n_i, D) predictions of the level's cells.
        sources: per level, the cells' local source indices (n_i elements, predictions' order).
        targets: (B, D) this process's L2-normalised targets; gathered here (no gradient).
    """
    every_target = dist.all_gather(targets)  # (N, D), rank order
    offset = dist.rank() * targets.shape[0]  # equal B on every process
    per_level = [
        mcl_cell_loss(p, every_target, s.reshape(-1) + offset, temperature)
        for p, s in zip(predictions, sources, strict=True)
    ]
    total = sum(w * loss for w, loss in zip(weights, per_level, strict=False))
    return total, per_level


@METHODS.register("mcl")
class MCL(CosineMomentumTeacher):
    Config = MCLConfig
    # The released config (configs/selfsup/MCL/MCL.py: 32 GPUs x 128 images): lr 16 at 4096.
    # configs/selfsup/MCL/MCL.py with OpenSelfSup's LARS and mmcv's warm-up times cosine.
    run_defaults = lars_run(4096, 100.0, base_lr=1.0, weight_decay=1e-5, min_lr=1e-4,
                            clip_grad=500.0, lars_variant="lr_in_buffer",
                            schedule="cosine_times_warmup", warmup_ratio=1e-4)  # fmt: skip
    export_network = "online"  # the reference's converter takes encoder_q
    # The head's convs transfer as the detector's box-head convs (its fc is not pretrained).
    export_roles: ClassVar[dict[str, str]] = {"backbone": "backbone", "fpn": "fpn",
                                              "box_head": "head.tower"}  # fmt: skip

    def __init__(self, cfg: MCLConfig, ctx: MethodContext) -> None:
        if cfg.head_inputs not in HEAD_INPUTS:
            raise ConfigError(f"method.head_inputs must be one of {', '.join(HEAD_INPUTS)}")
        if not 1 <= cfg.levels <= len(LEVELS) or len(cfg.level_weights) < cfg.levels:
            raise ConfigError(
                f"method.levels must be 1..{len(LEVELS)} with a weight each in "
                f"method.level_weights, got {cfg.levels} and {list(cfg.level_weights)}"
            )
        if ctx.image_size % STRIDE:
            raise ConfigError(
                f"MCL needs data.image_size divisible by {STRIDE} (every montage cell must cover "
                f"whole P5..P2 windows), got {ctx.image_size}; use e.g. "
                f"{max(STRIDE, round(ctx.image_size / STRIDE) * STRIDE)}"
            )
        super().__init__(cfg, ctx)
        backbone = build_backbone(ctx.backbone)
        fpn = FPN([backbone.out_channels[name] for name in LEVELS], cfg.fpn_channels)
        for module in fpn.modules():  # the reference calls the FPN's Xavier init_weights
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
        head = WindowHead(cfg.fpn_channels, cfg.head_channels, cfg.hidden_dim, cfg.dim,
                          cfg.head_convs)  # fmt: skip
        # Backbone, FPN and the head's tower transfer to Mask R-CNN; the target copies all.
        self.student = Encoder(backbone=backbone, fpn=fpn, head=head)
        self.predictors = nn.ModuleList(
            predictor(cfg.dim, cfg.hidden_dim) for _ in range(cfg.levels)
        )
        self.teacher = make_teacher(self.student)

    def view_specs(self) -> list[ViewSpec]:
        first, second = byol_views(self.ctx.image_size, self.cfg.crop_scale)
        return [first] * self.cfg.levels + [second] * self.cfg.levels

    @staticmethod
    def pyramid(encoder: Encoder, images: torch.Tensor) -> list[torch.Tensor]:
        """(M, 3, S, S) -> [P2, P3, P4, P5], each (M, C, S/4 .. S/32)."""
        return encoder.fpn(encoder.backbone(images))

    def embed_views(self, encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) full views -> (B, D): the head on the whole P5 map (one window)."""
        return encoder.head(self.pyramid(encoder, images)[-1])

    def branch_predictions(
        self, views: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Montage one branch's L ``views`` (B, 3, S, S), view i feeding level i, encode them in
        one pass, predict every cell. Per level: predictions (n_i, D), sources (M_i, 2^i, 2^i)
        local image indices in the predictions' order; and the pyramid levels' outputs (for the
        DDP guard)."""
        built = [mcl_level(v, i, antialias=self.cfg.antialias) for i, v in enumerate(views)]
        inputs, sources = zip(*built, strict=True)
        counts = [x.shape[0] for x in inputs]
        pyramid = self.pyramid(self.student, torch.cat(inputs))  # one BN batch, as the reference
        predictions, start = [], 0
        for level, count in enumerate(counts):
            grid, feature = 2**level, pyramid[len(LEVELS) - 1 - level]  # P(5 - level)
            if self.cfg.head_inputs == "all":  # the head over every image, then the slice
                every = self.student.head(cut_windows(feature, grid))
                cells = every.view(feature.shape[0], grid * grid, -1)[start : start + count]
                embedded = cells.reshape(count * grid * grid, -1)
            else:
                embedded = self.student.head(cut_windows(feature[start : start + count], grid))
            predictions.append(self.predictors[level](embedded))
            start += count
        return predictions, list(sources), pyramid

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        levels = self.cfg.levels
        first, second = batch.views[:levels], batch.views[levels : 2 * levels]
        pred_q, sources_q, pyramid_q = self.branch_predictions(first)
        pred_k, sources_k, pyramid_k = self.branch_predictions(second)
        with torch.no_grad():  # the target embeds the full views only (level 0 of each branch)
            z_q = F.normalize(at_least_float32(self.embed_views(self.teacher, first[0])), dim=1)
            z_k = F.normalize(at_least_float32(self.embed_views(self.teacher, second[0])), dim=1)
        weights, temperature = tuple(self.cfg.level_weights), self.cfg.temperature
        loss_q, levels_q = cross_branch_loss(pred_q, sources_q, z_k, weights, temperature)
        loss_k, levels_k = cross_branch_loss(pred_k, sources_k, z_q, weights, temperature)
        logs = {
            f"loss_level{i}": (a + b).detach()
            for i, (a, b) in enumerate(zip(levels_q, levels_k, strict=True))
        }
        # With fewer than 4 levels some pyramid outputs feed nothing.
        return LossOutput(keep_in_graph(loss_q + loss_k, (*pyramid_q, *pyramid_k)), logs)
