"""MoCo-v2: momentum contrast with an MLP head and strong augmentation.

Papers: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, https://arxiv.org/abs/1911.05722; Chen et al., "Improved Baselines with Momentum
Contrastive Learning", 2020, https://arxiv.org/abs/2003.04297. Reference:
facebookresearch/moco, and the MoCo-v2 path of WXinlong/DenseCL (``loss_lambda=0``).

Objective, for a query view q and key view k of the same image:

    q = normalize(g(f(x_q)))            student: backbone f, MLP head g (C-C-128, no BN)
    k = normalize(g'(f'(x_k)))          teacher (key encoder), no gradient
    L = -log exp(q·k/τ) / (exp(q·k/τ) + Σ_{n ∈ queue} exp(q·n/τ)),   τ = 0.2

The teacher follows θ' ← m·θ' + (1−m)·θ with m = 0.999; after each step the batch's keys,
gathered from all processes, replace the oldest entries of a queue of K = 65536.
Small-data recipe (``mocov2_small_data``, shared with DenseCL): lr 0.06 at batch 32, K = 256,
160 px views, ResNet-18. Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from densessl import dist
from densessl.data.batch import Batch
from densessl.data.views import ViewSpec, moco_v2_views
from densessl.errors import ConfigError
from densessl.losses import info_nce
from densessl.methods.base import LossOutput, MethodContext, StepState, TeacherStudent
from densessl.models import build_backbone
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.heads import MLPHead
from densessl.models.outputs import dense_level, global_vector
from densessl.models.precision import at_least_float32
from densessl.models.queue import NegativeQueue
from densessl.registry import METHODS
from densessl.schedules import Constant, RunLength, Schedule


@dataclass
class MoCoV2Config:
    name: str = "mocov2"
    dim: int = 128  # output dimension of the projection head (paper: 128)
    hidden_dim: int = 0  # hidden width of the head; 0 = backbone channels (2048 for R50)
    queue_size: int = 65536  # K, negatives kept from earlier batches (paper: 65536)
    temperature: float = 0.2  # τ (MoCo-v2: 0.2)
    momentum: float = 0.999  # m, key encoder momentum, constant (paper: 0.999)
    # Gaussian blur σ range in pixels, drawn per view with p 0.5 (paper: 0.1-2 px, for 224 px views)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5  # probability of the blur per view (paper: 0.5)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range (paper)


@METHODS.register("mocov2")
class MoCoV2(TeacherStudent):
    Config = MoCoV2Config

    def __init__(self, cfg: MoCoV2Config, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        low, high = cfg.blur_sigma
        if not 0 < low <= high:
            raise ConfigError(
                f"method.blur_sigma must be [low, high] pixels with 0 < low <= high "
                f"(paper: [0.1, 2.0]), not [{low}, {high}]"
            )
        if cfg.queue_size < ctx.keys_per_step:
            raise ConfigError(
                f"method.queue_size={cfg.queue_size} is shorter than the {ctx.keys_per_step} keys "
                f"each forward pass adds (batch_size / accum_steps); set method.queue_size to at "
                f"least {ctx.keys_per_step}"
            )
        self.student = self.build_encoder()
        self.teacher = make_teacher(self.student)
        self.queue = NegativeQueue(cfg.queue_size, cfg.dim)
        self._pending_keys: list[dict[str, torch.Tensor]] = []

    def build_encoder(self) -> Encoder:
        """Backbone plus the global MLP head; DenseCL adds a dense head beside it."""
        backbone = build_backbone(self.ctx.backbone)
        channels = backbone.out_channels[dense_level(backbone)]
        hidden = self.cfg.hidden_dim or channels
        return Encoder(backbone=backbone, global_head=MLPHead(channels, hidden, self.cfg.dim))

    def schedules(self) -> dict[str, Schedule]:
        return {"teacher_momentum": Constant(self.cfg.momentum)}

    def schedule_formulas(self, step: int, run: RunLength) -> dict[str, float]:
        return {"teacher_momentum": self.cfg.momentum}

    def view_specs(self) -> list[ViewSpec]:
        c = self.cfg
        size = self.ctx.image_size
        return moco_v2_views(size, tuple(c.blur_sigma), tuple(c.crop_scale), c.blur_p)

    def encode(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> {"global": (B, D) L2-normalised}."""
        outputs = encoder.backbone(images)  # C5 (B, C, H/32, W/32) pooled, or a ViT's class token
        pooled = global_vector(outputs, dense_level(encoder.backbone))
        return {"global": F.normalize(at_least_float32(encoder.global_head(pooled)), dim=1)}

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Teacher forward, with MoCo's shuffle-BN across processes when selected."""
        shuffle = self.ctx.batch_norm == "shuffle"
        if shuffle:
            images, unshuffle = dist.batch_shuffle(images, seed=self.ctx.seed * 7919 + step)
        keys = self.encode(self.teacher, images)
        if shuffle:
            keys = {name: dist.batch_unshuffle(t, unshuffle) for name, t in keys.items()}
        return keys

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        query_view, key_view = batch.views
        q = self.encode(self.student, query_view)
        k = self.encode_keys(key_view, state.step)
        loss = info_nce(q["global"], k["global"], self.queue.negatives(), self.cfg.temperature)
        self._pending_keys.append({"global": k["global"]})
        return LossOutput(loss, {"loss_global": loss.detach()})

    @torch.no_grad()
    def after_step(self, state: StepState) -> None:
        super().after_step(state)  # the EMA update
        self.enqueue_pending()

    def after_step_aborted(self) -> None:
        self._pending_keys.clear()

    def enqueue_pending(self) -> None:
        for keys in self._pending_keys:
            self.queue.enqueue(dist.all_gather(keys["global"]))
        self._pending_keys.clear()
