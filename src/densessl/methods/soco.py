"""SoCo: object-level BYOL on proposal boxes, pretraining backbone, FPN and box head together.

Paper: Wei et al., "Aligning Pretraining for Detection via Object-Level Contrastive Learning",
NeurIPS 2021, https://arxiv.org/abs/2106.02637. Reference: hologerry/SoCo @ 2be1229
(contrast/models/SoCo_FPN.py, fpn.py, fast_rcnn_conv_fc_head.py, mlps.py; contrast/data/).
Letters: N images, K box slots per view pair (4), D projection width (256), L = 4 levels.

Views (:mod:`densessl.data.box_views`): V1 the whole image at 224, V2 a crop (area 0.5-1) at
224, V3 a crop at 112; K proposals overlapping both views of (V1, V2), (V1, V3). SoCo*
(``star: true``): V3 at 192, V4 = V2's window at 112, pair (V1, V4) reusing (V1, V2)'s boxes.

Network (online θ; the target ξ is an EMA copy of all but the predictor)::

    P2..P5 = FPN(ResNet(v))                                   256 channels, BN
    level(box) = 0..3 by sqrt(w·h) in view pixels: ≤48, ≤96, ≤192, else (P2..P5)
    r = RoIAlign_7x7(P_level(box), box)                       aligned, on the assigned level
    e = fc1024(4 × conv3x3-256-BN-ReLU(r))                    4conv1fc box head
    z = projector(e) (1024-4096-256),  q = predictor(z) (256-4096-256)

Loss, for a pair (a, b) with ids matching box slots (:func:`densessl.losses.box_pair_loss`)::

    L(a→b) = −2 · mean_n [ Σ_ij C[n,i,j]·cos(q_ni^a, z_nj^b) / (Σ_ij C[n,i,j] + 1e−6) ]
    L = L(1→2) + L(2→1) + L(1→3) + L(3→1)    (+ L(1→4) + L(4→1) for SoCo*)

As the reference: last BN scale of every ResNet block starts at zero, projector and predictor
keep their last bias, box-aware cutout (p 0.5) only without ``star``. Target momentum
τ = 1 − (1 − 0.99)·(cos(πk/K) + 1)/2. Recipe: LARS, lr 1.0 × batch/256, wd 1e-5, 10 warm-up
epochs, cosine; batch 2048, 100 epochs, SyncBN, fp16. Exported: online backbone + FPN + box
head. ``soco_small_data``: BYOL's recipe. Deviations: docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from densessl.config import lars_run
from densessl.data.batch import Batch
from densessl.data.box_views import BoxViewsSpec, BoxViewsTransform
from densessl.data.proposals import assign_levels
from densessl.errors import ConfigError
from densessl.losses import box_pair_loss
from densessl.methods.base import (
    CosineMomentumTeacher,
    LossOutput,
    MethodContext,
    StepState,
    keep_in_graph,
)
from densessl.models import build_backbone
from densessl.models.box_head import ConvFCBoxHead, roi_align_assigned, roi_align_levels
from densessl.models.ema import make_teacher
from densessl.models.encoder import Encoder
from densessl.models.fpn import FPN, LEVELS
from densessl.models.heads import byol_mlp
from densessl.models.residual_init import zero_init_residual_
from densessl.registry import METHODS


@dataclass
class SoCoConfig:
    name: str = "soco"
    dim: int = 256  # projection / prediction width (code: 256)
    hidden_dim: int = 4096  # projector and predictor hidden width (code: 4096)
    fpn_channels: int = 256  # FPN output channels (code: 256)
    head_channels: int = 256  # channels of the 4 head convs (code: 256)
    head_fc_dim: int = 1024  # box head output (code: 1024)
    roi_size: int = 7  # RoIAlign output side (code: 7)
    momentum: float = 0.99  # τ_base, cosine to 1 (code: 0.99)
    boxes_per_pair: int = 4  # K (code: select_k = padding_k = 4)
    zero_init_residual: bool = True  # each block's last BN scale starts at 0 (code; see BYOL)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # V2/V3 area range (code: --crop 0.5)
    small_view_size: int = 0  # V3 side (SoCo*: V4 side); 0 = image_size // 2 (112 at 224)
    star: bool = False  # SoCo*: V3 at star_view_size plus V4 = V2 resized to small_view_size
    star_view_size: int = 0  # SoCo*'s V3 side; 0 = image_size · 6/7 (192 at 224)
    jitter_p: float = 0.5  # box jitter probability, V1 only (code: 0.5)
    jitter_ratio: float = 0.1  # jitter range (code: 0.1; parser default 0.2)
    cutout_p: float = 0.5  # box-aware cutout per box in V2/V3 (100-ep: 0.5; 400-ep, SoCo*: off)
    cutout_scale: tuple[float, float] = (0.1, 0.3)  # cutout area / box area (code: 0.1-0.3)
    max_tries: int = 5  # crop redraws while too few shared proposals (code: 5)
    level_thresholds: tuple[float, ...] = (48.0, 96.0, 192.0, 224.0)  # sqrt(wh) -> P2..P5
    roi_levels: str = "assigned"  # assigned | all (the reference's per-level passes, 4x cost)


def assign_pyramid_levels(boxes: torch.Tensor, thresholds: tuple[float, ...]) -> torch.Tensor:
    """(R, 4) view-pixel boxes -> (R,) level 0..3 (P2..P5), or -1 for a box larger than the last
    threshold (it joins no positive pair, as in the reference)."""
    return assign_levels(boxes.detach(), thresholds=tuple(thresholds)).long()


def unmatched_where(ids: torch.Tensor, unassigned: torch.Tensor, sentinel: int) -> torch.Tensor:
    """Proposal ids with unassigned slots set to ``sentinel`` (negative, distinct per side of a
    pair), so those slots match nothing."""
    return torch.where(unassigned, torch.full_like(ids, sentinel), ids)


@METHODS.register("soco")
class SoCo(CosineMomentumTeacher):
    Config = SoCoConfig
    # The released scripts (tools/SoCo_FPN_100ep.sh, 16 GPUs x 128 images): lr 8.0 at 2048.
    run_defaults = lars_run(2048, 100.0, base_lr=1.0, weight_decay=1e-5, min_lr=1e-6)
    export_network = "online"  # the reference's converters take the online network
    export_roles: ClassVar[dict[str, str]] = {"backbone": "backbone", "fpn": "fpn",
                                              "box_head": "box_head"}  # fmt: skip
    needs_proposals = True

    def __init__(self, cfg: SoCoConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.roi_levels not in ("assigned", "all"):
            raise ConfigError(f"method.roi_levels must be assigned or all, not {cfg.roi_levels!r}")
        backbone = build_backbone(ctx.backbone)
        if cfg.zero_init_residual:
            zero_init_residual_(backbone)  # the reference zeroes every block's bn3.weight
        fpn = FPN([backbone.out_channels[name] for name in LEVELS], cfg.fpn_channels)
        head = ConvFCBoxHead(cfg.fpn_channels, cfg.head_channels, cfg.head_fc_dim, cfg.roi_size)
        projector = byol_mlp(cfg.head_fc_dim, cfg.hidden_dim, cfg.dim, last_bias=True)
        # Backbone, FPN and box head transfer to Mask R-CNN; the projector maps box-head
        # features to D. The target copies all four.
        self.student = Encoder(backbone=backbone, fpn=fpn, box_head=head, projector=projector)
        self.predictor = byol_mlp(cfg.dim, cfg.hidden_dim, cfg.dim, last_bias=True)
        self.teacher = make_teacher(self.student)

    def box_views_spec(self) -> BoxViewsSpec:
        c, size = self.cfg, self.ctx.image_size
        small = c.small_view_size or size // 2
        star = c.star_view_size or round(size * 6 / 7)
        return BoxViewsSpec(
            size=size,
            small_size=star if c.star else small,
            extra_size=small if c.star else 0,
            crop_scale=tuple(c.crop_scale),
            boxes_per_pair=c.boxes_per_pair,
            max_tries=c.max_tries,
            jitter_p=c.jitter_p,
            jitter_ratio=c.jitter_ratio,
            cutout_p=0.0 if c.star else c.cutout_p,  # SoCo*'s augmentation has no cutout
            cutout_scale=tuple(c.cutout_scale),
        )

    def make_transform(self) -> BoxViewsTransform:
        return BoxViewsTransform(self.box_views_spec())

    @staticmethod
    def pyramid(encoder: Encoder, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [P2, P3, P4, P5]."""
        return encoder.fpn(encoder.backbone(images))

    def box_embeddings(
        self, encoder: Encoder, pyramid: list[torch.Tensor], boxes: torch.Tensor,
        view_size: tuple[int, int], predict: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Embed one box set.

        Args:
            pyramid: ``encoder``'s [P2..P5] of the view.
            boxes: (N, K, 4) view-pixel boxes.
            predict: apply the predictor (online branch).

        Returns:
            (N, K, D) embeddings from each box's assigned level, and (N, K) bool, True where a
            box has no level (placeholder embedding, excluded from the loss).
        """
        n, k = boxes.shape[:2]
        flat = boxes.reshape(n * k, 4)
        image_index = torch.arange(n, device=boxes.device).repeat_interleave(k)
        level = assign_pyramid_levels(flat, self.cfg.level_thresholds)  # (N·K,), -1 = none
        unassigned = level < 0
        level = level.clamp(min=0)

        def head(rois: torch.Tensor) -> torch.Tensor:
            z = encoder.projector(encoder.box_head(rois))  # (R, D), not normalised
            return self.predictor(z) if predict else z

        size = self.cfg.roi_size
        if self.cfg.roi_levels == "assigned":
            out = head(roi_align_assigned(pyramid, flat, image_index, level, view_size, size))
        else:  # the reference: every box through every level, one head pass per level
            pooled = roi_align_levels(pyramid, flat, image_index, view_size, size)  # (L, R, ...)
            per_level = torch.stack([head(rois) for rois in pooled])  # (L, R, D)
            out = per_level[level, torch.arange(n * k, device=boxes.device)]
        return out.reshape(n, k, -1), unassigned.reshape(n, k)

    def forward(self, batch: Batch, state: StepState) -> LossOutput:
        views = batch.views
        boxes, ids = batch.extras["boxes"], batch.extras["box_ids"]  # (N, P, 2, K, 4), (N, P, 2, K)
        sizes = [tuple(v.shape[-2:]) for v in views]
        student = [self.pyramid(self.student, v) for v in views]
        with torch.no_grad():
            teacher = [self.pyramid(self.teacher, v) for v in views]
        logs: dict[str, torch.Tensor] = {}
        loss = views[0].new_zeros((), dtype=torch.float32)
        for p, (a, b) in enumerate(self.box_views_spec().pairs):
            first, second = boxes[:, p, 0], boxes[:, p, 1]  # (N, K, 4) in Va, Vb pixels
            q_a, none_a = self.box_embeddings(self.student, student[a], first, sizes[a], True)
            q_b, none_b = self.box_embeddings(self.student, student[b], second, sizes[b], True)
            with torch.no_grad():
                z_a, _ = self.box_embeddings(self.teacher, teacher[a], first, sizes[a], False)
                z_b, _ = self.box_embeddings(self.teacher, teacher[b], second, sizes[b], False)
            ids_a = unmatched_where(ids[:, p, 0], none_a, -1)
            ids_b = unmatched_where(ids[:, p, 1], none_b, -2)
            pair = box_pair_loss(q_a, z_b, ids_a, ids_b) + box_pair_loss(q_b, z_a, ids_b, ids_a)
            logs[f"loss_v1v{b + 1}"] = pair.detach()
            loss = loss + pair
        # A level no box was assigned to would get no gradient at all (in the reference, whose
        # masked levels are pooled, it is zero too).
        return LossOutput(keep_in_graph(loss, (lvl for pyr in student for lvl in pyr)), logs)
