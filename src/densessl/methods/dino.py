"""DINO: self-distillation with no labels, on Vision Transformers.

Paper: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
https://arxiv.org/abs/2104.14294. Reference: facebookresearch/dino @ 7c446df
(main_dino.py, vision_transformer.py, utils.py). Letters: B images, V = 2 + M views (2 global,
M local), D embed width, K head outputs.

Objective. Student g_s and teacher g_t are a ViT (its [CLS] token) plus :class:`DINOHead`::

    P_t(x) = softmax((g_t(x) − c) / τ_t)          centring c, sharpening τ_t
    log P_s(x) = log_softmax(g_s(x) / τ_s)         τ_s = 0.1
    L = 1/|pairs| Σ_{a ∈ global} Σ_{b ≠ a, b ∈ all views} mean_batch CE(P_t(x_a), P_s(x_b))

with 2·(V − 1) pairs. After every step c ← 0.9·c + 0.1·mean of the teacher's logits (2 global
views, batch of all processes), and θ_t ← m·θ_t + (1 − m)·θ_s with m following a cosine from
0.996 to 1.

Defaults: the README's "vanilla" ViT-S/16 run (100 epochs, batch 512, τ_t 0.04, last layer's gain
fixed); ``dino_vits16_in1k_300ep`` is the "boosted" run. AdamW, lr 5e-4 × batch/256, 10 warm-up
epochs, cosine; wd cosine 0.04 -> 0.4; grad clip 3; last layer frozen the first epoch; drop path
0.1 on the student; fp16. The head's last layer and both softmaxes run in float32 (bf16 logits
would be coarser than fp16 before the τ_t sharpening). Small-data recipe: BENCHMARKS.md.
Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from densessl import dist
from densessl.config import OptimConfig, TrainConfig
from densessl.data.batch import Batch
from densessl.data.views import ViewSpec, multi_crop_views
from densessl.errors import ConfigError
from densessl.losses import cross_view_loss
from densessl.methods.base import LossOutput, MethodContext, StepState, TeacherStudent
from densessl.models import build_backbone
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.heads import DINOHead
from densessl.models.precision import at_least_float32
from densessl.models.vit import ViTBackbone, disable_drop_path_
from densessl.registry import METHODS
from densessl.schedules import (
    Cosine,
    LinearThenConstant,
    RunLength,
    Schedule,
    Switch,
    cosine_to_one,
)


@dataclass
class DINOConfig:
    name: str = "dino"
    out_dim: int = 65536  # K, head outputs (paper: 65536)
    hidden_dim: int = 2048  # head MLP width (paper: 2048)
    bottleneck_dim: int = 256  # width before the weight-normalised layer (paper: 256)
    norm_last_layer: bool = True  # last-layer gain fixed at 1 (vanilla run; boosted: False)
    student_temp: float = 0.1  # τ_s (paper: 0.1)
    teacher_temp: float = 0.04  # τ_t after warm-up (vanilla run: 0.04; boosted: 0.07)
    warmup_teacher_temp: float = 0.04  # τ_t at step 0 (both runs: 0.04)
    warmup_teacher_temp_epochs: float = 0.0  # linear τ_t warm-up (vanilla: 0; boosted: 30)
    center_momentum: float = 0.9  # EMA of the centre (paper: 0.9)
    momentum: float = 0.996  # teacher EMA at step 0, cosine to 1 (paper: 0.996)
    local_crops: int = 8  # M small views (paper: 8 by default, 10 for released ViT-S/16)
    local_crop_size: int = 96  # side of a local view (paper: 96 with 224 global views)
    global_crop_scale: tuple[float, float] = (0.4, 1.0)  # area range (code default)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)  # area range (code default)
    freeze_last_layer_epochs: float = 1.0  # no update of the head's last layer (paper: 1)
    drop_path_rate: float = 0.1  # student stochastic depth (paper: 0.1); teacher: 0


def same_size_runs(views: list[torch.Tensor]) -> list[list[int]]:
    """Consecutive views of one size, grouped so each group is one backbone pass
    (DINO's MultiCropWrapper): [[0, 1], [2, ..., V-1]] for 2 global + M local views."""
    runs: list[list[int]] = []
    for i, view in enumerate(views):
        if runs and views[runs[-1][0]].shape[-2:] == view.shape[-2:]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@METHODS.register("dino")
class DINO(TeacherStudent):
    Config = DINOConfig
    # The README's vanilla run in the engine (ViT-S/16, 100 epochs, 8 GPUs x 64 images).
    run_defaults = TrainConfig(
        backbone="vit_small_patch16",
        batch_size=512,
        epochs=100.0,
        optim=OptimConfig(
            name="adamw",
            base_lr=5e-4,  # per 256 images, linear scaling rule
            weight_decay=0.04,
            weight_decay_end=0.4,  # cosine
            decay_norm_and_bias=False,  # biases and 1-D parameters are not decayed
            warmup_epochs=10.0,
            min_lr=1e-6,
            clip_grad=3.0,
            clip_mode="per_param",
        ),
    )
    export_network = "teacher"  # the DINO authors release (and evaluate) the teacher

    def __init__(self, cfg: DINOConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.student = self.build_encoder()
        self.teacher = disable_drop_path_(make_teacher(self.student))
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self._pending_centers: list[torch.Tensor] = []

    def build_vit(self, class_token: bool = True, final_norm: bool = True) -> ViTBackbone:
        """The student's ViT, its position-embedding table laid out for the global crops."""
        name = self.ctx.backbone
        if not name.startswith("vit_"):
            raise ConfigError(f"{self.cfg.name} needs a ViT backbone (vit_*), not {name}")
        return build_backbone(
            name,
            class_token=class_token,
            final_norm=final_norm,
            img_size=self.ctx.image_size,
            drop_path_rate=self.cfg.drop_path_rate,
        )

    def head(self, in_dim: int, out_dim: int) -> DINOHead:
        c = self.cfg
        return DINOHead(in_dim, out_dim, c.hidden_dim, c.bottleneck_dim, c.norm_last_layer)

    def build_encoder(self) -> Encoder:
        """ViT backbone plus the projection head applied to its [CLS] token."""
        backbone = self.build_vit()
        return Encoder(backbone=backbone, head=self.head(backbone.embed_dim, self.cfg.out_dim))

    def view_specs(self) -> list[ViewSpec]:
        c = self.cfg
        return multi_crop_views(self.ctx.image_size, c.local_crop_size, c.local_crops,
                                c.global_crop_scale, c.local_crop_scale)  # fmt: skip

    def schedules(self) -> dict[str, Schedule]:
        c = self.cfg
        return {
            # Cosine from ``momentum`` at step 0 to 1 at the last step.
            "teacher_momentum": Cosine(c.momentum, 1.0),
            "teacher_temp": LinearThenConstant(
                c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs
            ),
            "freeze_last_layer": Switch(1.0, 0.0, at_epochs=c.freeze_last_layer_epochs),
        }

    def schedule_formulas(self, step: int, run: RunLength) -> dict[str, float]:
        c = self.cfg
        warm = round(c.warmup_teacher_temp_epochs * run.steps_per_epoch)
        frozen = round(c.freeze_last_layer_epochs * run.steps_per_epoch)
        temp = c.teacher_temp
        if step < warm:  # linear from τ_t's warm-up value, per step
            temp = c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * step / warm
        return {
            "teacher_momentum": cosine_to_one(c.momentum, step, run.total_steps),
            "teacher_temp": temp,
            "freeze_last_layer": float(step < frozen),
        }

    def image_logits(self, encoder: Encoder, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """V views (B, 3, H_v, W_v) -> V logits (B, K), one backbone pass per view size."""
        logits: list[torch.Tensor] = []
        for run in same_size_runs(views):
            cls = encoder.backbone(torch.cat([views[i] for i in run]))["cls"]  # (len·B, D)
            logits += at_least_float32(encoder.head(cls)).chunk(len(run))
        return logits

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's image logits (B, K) of one batch of global-size views."""
        return self.image_logits(self.teacher, [images])[0]

    def teacher_distribution(self, images: torch.Tensor, state: StepState) -> torch.Tensor:
        """The teacher's target softmax((g_t(x) − C) / τ_t), (N, K)."""
        logits = (self.teacher_logits(images) - self.center) / state.teacher_temp
        return torch.softmax(logits, dim=-1)

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        views = batch.views
        with torch.no_grad():
            teacher = self.image_logits(self.teacher, views[:2])  # 2 x (B, K)
        student = self.image_logits(self.student, views)  # V x (B, K)
        temp = state.teacher_temp
        loss = cross_view_loss(student, teacher, self.center, self.cfg.student_temp, temp)
        self._pending_centers.append(torch.cat(teacher).mean(dim=0, keepdim=True))  # (1, K)
        return LossOutput(
            loss, {"loss_image": loss.detach(), "teacher_temp": loss.new_tensor(temp)}
        )

    @staticmethod
    def update_center_(center: torch.Tensor, pending: list[torch.Tensor], momentum: float) -> None:
        """center ← m·center + (1 − m)·mean of the pending per-micro-batch means (all ranks);
        equal sizes make the mean of means the batch mean."""
        if pending:
            batch_mean = dist.all_reduce_mean(torch.cat(pending).mean(dim=0, keepdim=True))
            center.mul_(momentum).add_(batch_mean, alpha=1.0 - momentum)
        pending.clear()

    @torch.no_grad()
    def after_step(self, state: StepState) -> None:
        super().after_step(state)  # the EMA update
        self.update_center_(self.center, self._pending_centers, self.cfg.center_momentum)

    def after_step_aborted(self) -> None:
        self._pending_centers.clear()

    def last_layers(self) -> list[nn.Module]:
        """The head's output layer, which ``freeze_last_layer`` holds still."""
        return [self.student.head.last_layer]

    def frozen_parameters(self, state: StepState) -> list[nn.Parameter]:
        """The last layers while ``freeze_last_layer`` is on (the first epoch)."""
        if not state.freeze_last_layer:
            return []
        return [p for layer in self.last_layers() for p in layer.parameters() if p.requires_grad]
