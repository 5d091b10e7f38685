"""DenseCL: dense contrastive learning, MoCo-v2 plus a pixel-level term.

Paper: Wang et al., "Dense Contrastive Learning for Self-Supervised Visual Pre-Training",
CVPR 2021, https://arxiv.org/abs/2011.09157. Reference: WXinlong/DenseCL @ b64bbb6
(openselfsup/models/densecl.py, necks.py DenseCLNeck).

Objective, with the MoCo-v2 notation of :mod:`densessl.methods.mocov2`:

    L = (1 − λ)·L_q + λ·L_r,   λ = 0.5
    L_q  the global InfoNCE of MoCo-v2 (queue of K = 65536 global keys)
    L_r  = (1/S²) Σ_s −log exp(r_s·t_s/τ) / (exp(r_s·t_s/τ) + Σ_{n ∈ queue₂} exp(r_s·n/τ))

r_s is the student's dense projection at location s of the S×S grid (1×1-conv head C-C-128, no
BN, L2-normalised per location); t_s the teacher's at j*(s) = argmax_j cos(F_q[s], F_k[j]), F
the backbone C5 features. queue₂ holds, per image, the L2-normalised mean of the teacher's dense
projection. τ = 0.2 for both terms; L_r averages all B·S² query locations.

ViT backbones (``vit_*``, our extension, untuned): the last block's patch tokens as an h×w map
take C5's place; the class token (or the patch mean) is the global vector. Small-data recipe:
MoCo-v2's, at 160 px so that C5 is a 5×5 grid. Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from densessl import dist
from densessl.data.batch import Batch
from densessl.losses import densecl_dense_loss, info_nce
from densessl.methods.base import LossOutput, MethodContext, StepState
from densessl.methods.mocov2 import MoCoV2, MoCoV2Config
from densessl.models.encoder import Encoder
from densessl.models.heads import DenseHead
from densessl.models.outputs import dense_level, global_vector
from densessl.models.precision import at_least_float32
from densessl.models.queue import NegativeQueue
from densessl.registry import METHODS
from densessl.schedules import RunLength, Schedule, Switch


@dataclass
class DenseCLConfig(MoCoV2Config):
    name: str = "densecl"
    dense_weight: float = 0.5  # λ, weight of the dense term (paper: 0.5)
    dense_warmup_steps: int = 0  # λ = 0 before this step (reference hook, off by default)
    grid_size: int = 0  # S, dense grid side; 0 = the C5 map size (paper: 7 at 224 px)


@METHODS.register("densecl")
class DenseCL(MoCoV2):
    Config = DenseCLConfig

    def __init__(self, cfg: DenseCLConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.dense_queue = NegativeQueue(cfg.queue_size, cfg.dim)

    def build_encoder(self) -> Encoder:
        """MoCo-v2's backbone and global head, plus the dense 1x1-conv head."""
        base = super().build_encoder()
        channels = base.backbone.out_channels[dense_level(base.backbone)]
        hidden = self.cfg.hidden_dim or channels
        dense_head = DenseHead(channels, hidden, self.cfg.dim)
        return Encoder(backbone=base.backbone, global_head=base.global_head, dense_head=dense_head)

    def schedules(self) -> dict[str, Schedule]:
        # λ = 0 before the warm-up step: the switch of the reference's DenseCLWarmupHook.
        dense_weight = Switch(0.0, self.cfg.dense_weight, at_steps=self.cfg.dense_warmup_steps)
        return {**super().schedules(), "dense_weight": dense_weight}

    def schedule_formulas(self, step: int, run: RunLength) -> dict[str, float]:
        c = self.cfg
        lam = c.dense_weight if step >= c.dense_warmup_steps else 0.0
        return {**super().schedule_formulas(step, run), "dense_weight": lam}

    def encode(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> global (B, D), dense (B, N, D), pooled (B, D) normalised;
        feat (B, N, C) raw backbone features on the same S×S grid (N = S²)."""
        outputs = encoder.backbone(images)
        level = dense_level(encoder.backbone)
        c5 = outputs[level]  # (B, C, h, w): C5, or a ViT's patch tokens laid out as a map
        global_proj = encoder.global_head(global_vector(outputs, level))
        grid = c5 if not self.cfg.grid_size else F.adaptive_avg_pool2d(c5, self.cfg.grid_size)
        dense = at_least_float32(encoder.dense_head(grid))  # (B, D, S, S)
        return {
            "global": F.normalize(at_least_float32(global_proj), dim=1),
            "dense": F.normalize(dense.flatten(2).transpose(1, 2), dim=2),  # (B, N, D)
            "pooled": F.normalize(dense.mean(dim=(2, 3)), dim=1),  # dense-queue entry
            "feat": at_least_float32(grid)
            .flatten(2)
            .transpose(1, 2),  # (B, N, C), for matching only
        }

    def projections(self, images: torch.Tensor) -> torch.Tensor:
        """The key encoder's dense projections, one row per grid cell: (B N, D)."""
        return self.encode(self.teacher, images)["dense"].flatten(0, 1)

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        query_view, key_view = batch.views
        q = self.encode(self.student, query_view)
        k = self.encode_keys(key_view, state.step)
        t = self.cfg.temperature
        loss_global = info_nce(q["global"], k["global"], self.queue.negatives(), t)
        loss_dense = densecl_dense_loss(
            q["dense"], k["dense"], q["feat"].detach(), k["feat"], self.dense_queue.negatives(), t
        )
        lam = state.dense_weight
        # Both terms stay in the graph when λ = 0 so DDP sees every parameter used every step.
        loss = (1.0 - lam) * loss_global + lam * loss_dense
        self._pending_keys.append({"global": k["global"], "pooled": k["pooled"]})
        logs = {"loss_global": loss_global.detach(), "loss_dense": loss_dense.detach()}
        return LossOutput(loss, logs)

    def enqueue_pending(self) -> None:
        for keys in self._pending_keys:
            self.queue.enqueue(dist.all_gather(keys["global"]))
            self.dense_queue.enqueue(dist.all_gather(keys["pooled"]))
        self._pending_keys.clear()
