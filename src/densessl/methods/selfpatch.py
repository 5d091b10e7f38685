"""SelfPatch: DINO plus patch-level self-distillation from each patch's most similar neighbours.

Paper: Yun et al., "Patch-level Representation Learning for Self-supervised Vision
Transformers", CVPR 2022, https://arxiv.org/abs/2206.07990. Reference: alinlab/SelfPatch @ 81aef14
(main_selfpatch.py, selfpatch_vision_transformer.py). Letters as :mod:`densessl.methods.dino`;
N = h·w patches of a view, k neighbours, Kp patch-head outputs.

A ViT without [CLS] token or final norm gives patch tokens P (B, N, D); a :class:`TokenAggregator`
A (a learnable query, two class-attention blocks, a LayerNorm) makes the image token ``A(P)``.
Two :class:`DINOHead`s: image (K = 65536) and patch (Kp = 4096).

Targets (teacher, every view): patch i keeps the k = 4 of the 8 cells of its 3x3 window
(``border``: ``wrap`` as the reference, or ``clamp``) most similar by cosine of the teacher's P
(:func:`densessl.losses.selfpatch_neighbors`); its target is ``A(P[neighbours of i])``.
Predictions (student): LN(P_i), patch i's own token through A's final LayerNorm.

Objective, τ_t constant 0.04 (reference default), τ_s = 0.1::

    L_image = DINO's multi-crop loss on the image tokens (teacher's 2 global views vs all others)
    L_patch = 1/V Σ_v mean over batch and patches of CE(softmax((h_t(target) − c_p)/τ_t),
                                                         log_softmax(h_s(LN(P_i))/τ_s))
    L = L_image + 0.1 · L_patch

The image centre c is updated with the teacher's image logits of all V views (DINO: only the
global ones), the patch centre c_p with the mean over every patch of every view. Small-data
recipe: DINO's. Deviations: docs/deviations.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from densessl.data.batch import Batch
from densessl.errors import ConfigError
from densessl.losses import cross_view_loss, dino_loss
from densessl.methods.base import LossOutput, MethodContext, StepState
from densessl.methods.dino import DINO, DINOConfig, same_size_runs
from densessl.models.class_attention import TokenAggregator
from densessl.models.encoder import Encoder
from densessl.models.neighbours import BORDERS, selfpatch_neighbors
from densessl.models.precision import at_least_float32
from densessl.models.vit import patch_tokens
from densessl.registry import METHODS


@dataclass
class SelfPatchConfig(DINOConfig):
    name: str = "selfpatch"
    teacher_temp: float = 0.04  # τ_t, constant (reference: 0.04, no warm-up)
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0.0
    global_crop_scale: tuple[float, float] = (0.25, 1.0)  # reference: (0.25, 1)
    local_crop_scale: tuple[float, float] = (0.05, 0.25)  # reference: (0.05, 0.25)
    patch_out_dim: int = 4096  # Kp, patch-head outputs (reference: 4096)
    neighbours: int = 4  # k, positives kept per patch among its 8 (reference: 4)
    border: str = "wrap"  # wrap (reference: torus) | clamp (drop cells outside the view)
    patch_loss_weight: float = 0.1  # weight of L_patch (reference: 0.1, hard-coded)
    aggregator_depth: int = 2  # class-attention blocks (reference: 2)


def gather_neighbours(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), index (B, N, k) with -1 for empty slots -> (B, N, k, D); empty slots
    hold an arbitrary token (the caller masks them)."""
    batch, n, k = index.shape
    flat = index.clamp(min=0).reshape(batch, n * k, 1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, flat).reshape(batch, n, k, tokens.shape[-1])


@METHODS.register("selfpatch")
class SelfPatch(DINO):
    Config = SelfPatchConfig
    # The reference's README run: ViT-S/16, 8 GPUs x 128 images, 300 epochs (paper text: 200).
    run_defaults = dataclasses.replace(DINO.run_defaults, batch_size=1024, epochs=300.0)

    def __init__(self, cfg: SelfPatchConfig, ctx: MethodContext) -> None:
        if cfg.border not in BORDERS:
            raise ConfigError(f"method.border must be one of {', '.join(BORDERS)}")
        super().__init__(cfg, ctx)
        self.register_buffer("patch_center", torch.zeros(1, cfg.patch_out_dim))
        self._pending_patch_centers: list[torch.Tensor] = []

    def build_encoder(self) -> Encoder:
        """ViT without [CLS] or final norm, the token aggregator, the image and patch heads."""
        backbone = self.build_vit(class_token=False, final_norm=False)
        dim, heads = backbone.embed_dim, backbone.timm_kwargs["num_heads"]
        return Encoder(
            backbone=backbone,
            aggregator=TokenAggregator(dim, heads, self.cfg.aggregator_depth),
            head=self.head(dim, self.cfg.out_dim),
            patch_head=self.head(dim, self.cfg.patch_out_dim),
        )

    def encode_tokens(self, encoder: Encoder, views: list[torch.Tensor]):
        """Per view: patch tokens (B, N, D) and grid (h, w); one backbone pass per view size."""
        per_view: list[tuple[torch.Tensor, tuple[int, int]]] = []
        for run in same_size_runs(views):
            grid = encoder.backbone(torch.cat([views[i] for i in run]))["patch"]  # (r·B, D, h, w)
            hw = (grid.shape[-2], grid.shape[-1])
            per_view += [(t, hw) for t in patch_tokens(grid).chunk(len(run))]
        return per_view

    @torch.no_grad()
    def teacher_outputs(self, views: list[torch.Tensor]):
        """Image logits (B, K) and patch-target logits (B, N, Kp) of every view."""
        teacher = self.teacher
        images, patches = [], []
        for tokens, hw in self.encode_tokens(teacher, views):
            batch, n, dim = tokens.shape
            index = selfpatch_neighbors(tokens, hw, self.cfg.neighbours, self.cfg.border)
            neighbours = gather_neighbours(tokens, index).reshape(batch * n, -1, dim)
            valid = (index >= 0).reshape(batch * n, -1)
            # Skip the mask when every slot is filled: the unmasked attention path is faster.
            targets = teacher.aggregator.summarise(neighbours, None if valid.all() else valid)
            images.append(at_least_float32(teacher.head(teacher.aggregator.summarise(tokens))))
            patches.append(at_least_float32(teacher.patch_head(targets.reshape(batch, n, dim))))
        return images, patches

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's image logits (B, K): its head on the aggregated tokens."""
        return self.teacher_outputs([images])[0][0]

    def student_outputs(self, views: list[torch.Tensor]):
        """Image logits (B, K) and own-token patch logits (B, N, Kp) of every view."""
        student = self.student
        images, patches = [], []
        for tokens, _ in self.encode_tokens(student, views):
            images.append(at_least_float32(student.head(student.aggregator.summarise(tokens))))
            patches.append(at_least_float32(student.patch_head(student.aggregator.norm(tokens))))
        return images, patches

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        c, temp = self.cfg, state.teacher_temp
        t_images, t_patches = self.teacher_outputs(batch.views)
        s_images, s_patches = self.student_outputs(batch.views)
        loss_image = cross_view_loss(s_images, t_images[:2], self.center, c.student_temp, temp)
        # Same-view pairs only: a patch's neighbourhood is defined inside its own view.
        loss_patch = torch.stack(
            [
                dino_loss(s.flatten(0, 1), t.flatten(0, 1), self.patch_center, c.student_temp, temp)
                for s, t in zip(s_patches, t_patches, strict=True)
            ]
        ).mean()
        loss = loss_image + c.patch_loss_weight * loss_patch
        self._pending_centers.append(torch.cat(t_images).mean(dim=0, keepdim=True))
        # One pooled mean over every patch of every view (global views weigh more: more patches).
        all_patches = torch.cat([t.flatten(0, 1) for t in t_patches])
        self._pending_patch_centers.append(all_patches.mean(dim=0, keepdim=True))
        logs = {"loss_image": loss_image.detach(), "loss_patch": loss_patch.detach()}
        return LossOutput(loss, logs)

    @torch.no_grad()
    def after_step(self, state: StepState) -> None:
        super().after_step(state)
        self.update_center_(
            self.patch_center, self._pending_patch_centers, self.cfg.center_momentum
        )

    def after_step_aborted(self) -> None:
        super().after_step_aborted()
        self._pending_patch_centers.clear()

    def last_layers(self) -> list[nn.Module]:
        return [self.student.head.last_layer, self.student.patch_head.last_layer]
