"""The detector: torchvision's Faster / Mask R-CNN R-FPN over a densessl trunk, two head layouts.

The trunk loads a :class:`ResNetBackbone` onto ``model.backbone.body``; FPN and heads start
random unless :func:`load_extra_state` loads them. "v1" (``fasterrcnn_resnet50_fpn``): FPN
without norm, 1-conv RPN head, 2-fc box head, 4-conv mask head. "v2" (``*_resnet50_fpn_v2`` for
any depth, the layout SoCo pretrains): FPN with BN, 2-conv RPN head, 4conv1fc box and mask heads
with BN, widths from :class:`HeadWidths`. Trunk ``norm``: "frozen" (``FrozenBatchNorm2d``, poor
for a random trunk), "bn" (trainable) or "sync" ("bn" synchronised: ``SyncBatchNorm`` on NCCL,
:class:`~densessl.models.norm.GlobalBatchNorm2d` on gloo); v2 head BN is always synchronised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from densessl import dist
from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.models.backbones import ResNetBackbone
from densessl.models.norm import convert_batchnorm

log = logging.getLogger("densessl")

MODELS = ("faster_rcnn", "mask_rcnn")
NORMS = ("frozen", "sync", "bn")
DEFAULT_ARCH = "resnet18"
# torchvision's default anchors (its _default_anchorgen): one size per FPN level P2..P6.
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
MASK_HEAD_CONVS = [256] * 4  # maskrcnn_resnet50_fpn_v2's mask head; never pretrained here
# Keys only a v2 detector has: a BN inside the FPN blocks, or the box head's Sequential (v1's
# box head is TwoMLPHead, keys fc6/fc7).
_V2_KEY = re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.\d+\.1\.|roi_heads\.box_head\.\d+\.")
_V2_BOX_CONV = re.compile(r"roi_heads\.box_head\.(\d+)\.0\.weight")  # (out, in, 3, 3)
_V2_BOX_FC = re.compile(r"roi_heads\.box_head\.\d+\.weight")  # (fc_dim, channels * 7 * 7)


@dataclass(frozen=True)
class HeadWidths:
    """Widths of a v2 detector's FPN and box head; the defaults are torchvision's.

    Attributes:
        fpn: channels of every pyramid level (also the RPN head's and the RoI features').
        box_convs: output channels of the box head's 3x3 convs, in order.
        box_fc: features out of the box head's fc (the box predictor's input).
    """

    fpn: int = 256
    box_convs: tuple[int, ...] = (256, 256, 256, 256)
    box_fc: int = 1024

    @classmethod
    def of(cls, state: dict[str, torch.Tensor]) -> HeadWidths:
        """The widths of v2 FPN / box-head weights (torchvision names), defaults for absent
        parts; the detector is sized to narrower pretrained parts rather than refusing them."""
        default = cls()
        lateral = state.get("backbone.fpn.inner_blocks.0.0.weight")  # (fpn, C2, 1, 1)
        convs = sorted((int(m[1]), v.shape[0]) for k, v in state.items()
                       if (m := _V2_BOX_CONV.fullmatch(k)))  # fmt: skip
        fcs = [v.shape[0] for k, v in state.items() if _V2_BOX_FC.fullmatch(k)]
        return cls(
            fpn=default.fpn if lateral is None else lateral.shape[0],
            box_convs=tuple(c for _, c in convs) or default.box_convs,
            box_fc=fcs[0] if fcs else default.box_fc,
        )


def has_v2_heads(state: dict[str, torch.Tensor]) -> bool:
    """Whether torchvision-named weights hold a v2 FPN (with BN) or v2 box head."""
    return any(_V2_KEY.match(k) for k in state)


def _resolve_arch(backbone: ResNetBackbone | None, arch: str | None) -> str:
    if backbone is None:
        return arch or DEFAULT_ARCH
    if arch is not None and arch != backbone.arch:
        raise ValueError(f"arch {arch!r} differs from the backbone's {backbone.arch!r}")
    return backbone.arch


def _load_trunk(body: nn.Module, backbone: ResNetBackbone) -> None:
    """Copy the backbone's weights into the detector's trunk; every key must find its place."""
    result = body.load_state_dict(backbone.state_dict(), strict=False)
    # FrozenBatchNorm2d has no num_batches_tracked and drops it while loading (so it is not even
    # reported); anything else left over means the trunk and the backbone differ.
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"backbone weights do not fit the {backbone.arch} trunk: missing "
            f"{result.missing_keys[:5]}, unexpected {unexpected[:5]}"
        )


def _synchronise(detector: nn.Module) -> nn.Module:
    if not dist.is_initialized():
        return detector
    # torch's SyncBatchNorm refuses CPU tensors; densessl's GlobalBatchNorm2d works on gloo.
    mode = "torch_sync" if tdist.get_backend() == "nccl" else "sync"
    return convert_batchnorm(detector, mode)


def _v2_parts(
    arch: str, trunk_norm: type[nn.Module], num_classes: int, model: str, widths: HeadWidths
) -> tuple[BackboneWithFPN, dict[str, Any]]:
    """torchvision's ``*_resnet50_fpn_v2`` layout for any ResNet (its builders hard-code
    resnet50): the trunk + FPN, and the ``FasterRCNN`` / ``MaskRCNN`` keywords for the rest."""
    trunk = getattr(torchvision.models, arch)(weights=None, norm_layer=trunk_norm)
    # C2..C5 widths as torchvision's _resnet_fpn_extractor computes them (64..512 for R18).
    in_channels = [trunk.inplanes // 8 * 2**i for i in range(4)]
    stages = {f"layer{i + 1}": str(i) for i in range(4)}
    fpn = BackboneWithFPN(
        trunk, stages, in_channels, widths.fpn, LastLevelMaxPool(), norm_layer=nn.BatchNorm2d
    )
    anchors = AnchorGenerator(ANCHOR_SIZES, (ANCHOR_RATIOS,) * len(ANCHOR_SIZES))
    parts: dict[str, Any] = {
        "num_classes": None,  # the predictors below carry it, sized to the pretrained fc
        "rpn_anchor_generator": anchors,
        "rpn_head": RPNHead(widths.fpn, anchors.num_anchors_per_location()[0], conv_depth=2),
        "box_head": FastRCNNConvFCHead(
            (widths.fpn, 7, 7), list(widths.box_convs), [widths.box_fc], norm_layer=nn.BatchNorm2d
        ),
        "box_predictor": FastRCNNPredictor(widths.box_fc, num_classes),
    }
    if model == "mask_rcnn":
        parts["mask_head"] = MaskRCNNHeads(widths.fpn, MASK_HEAD_CONVS, 1, nn.BatchNorm2d)
        parts["mask_predictor"] = MaskRCNNPredictor(MASK_HEAD_CONVS[-1], 256, num_classes)
    return fpn, parts


def build_detector(
    backbone: ResNetBackbone | None,
    num_classes: int,
    arch: str | None = None,
    model: str = "faster_rcnn",
    norm: str = "frozen",
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    detector_options: dict[str, Any] | None = None,
    heads: str = "v1",
    widths: HeadWidths | None = None,
) -> GeneralizedRCNN:
    """A torchvision R-FPN detector whose trunk holds ``backbone``'s weights, on the CPU, in
    training mode.

    Args:
        backbone: the pretrained trunk, or None for torchvision's random init.
        num_classes: classes including the background.
        arch: torchvision ResNet name; defaults to ``backbone.arch`` (resnet18 without one).
        min_size: short side of the resized input; several values = a random one per batch in
            training, the last one at test time.
        detector_options: more keyword arguments of torchvision's ``FasterRCNN`` / ``MaskRCNN``.
        widths: v2 FPN / box-head widths; None = torchvision's.
    """
    if model not in MODELS:
        raise ValueError(f"unknown detector {model!r}; known: {', '.join(MODELS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if heads not in ("v1", "v2"):
        raise ValueError(f"unknown head layout {heads!r}; known: v1, v2")
    arch = _resolve_arch(backbone, arch)
    norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
    if heads == "v1":
        fpn = resnet_fpn_backbone(
            backbone_name=arch, weights=None, norm_layer=norm_layer, trainable_layers=5
        )
        parts: dict[str, Any] = {"num_classes": num_classes}
    else:
        fpn, parts = _v2_parts(arch, norm_layer, num_classes, model, widths or HeadWidths())
    if backbone is not None:
        _load_trunk(fpn.body, backbone)
    detector_class = MaskRCNN if model == "mask_rcnn" else FasterRCNN
    detector = detector_class(
        fpn,
        min_size=min_size if isinstance(min_size, int) else tuple(min_size),
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        **parts,
        **(detector_options or {}),
    )
    if norm == "sync":
        return _synchronise(detector)
    if heads == "v2":
        # The protocol's SyncBN in the FPN and heads, whatever the trunk does (frozen or
        # per-process BN). Neither part is itself a BN, so they are converted in place.
        _synchronise(detector.backbone.fpn)
        _synchronise(detector.roi_heads)
    return detector


def load_extra_state(detector: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load pretrained FPN / head weights in the detector's torchvision names; return the keys
    used. Trunk keys (``backbone.body.*``) are refused; missing or mis-shaped keys are skipped
    and logged; a state with no usable key is taken for a naming mistake."""
    trunk = [k for k in state if k.startswith("backbone.body.")]
    if trunk:
        raise ValueError(f"extra_state holds trunk keys ({trunk[0]}, ...); pass those as backbone")
    own = detector.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(fitting))
    if state and not fitting:
        raise ValueError(
            f"none of the {len(state)} extra_state keys ({skipped[0]}, ...) fits the detector; "
            "use torchvision names such as backbone.fpn.inner_blocks.0.0.weight"
        )
    detector.load_state_dict(fitting, strict=False)
    if skipped:
        log.warning(
            "extra_state: %d keys skipped (absent or other shape): %s", len(skipped), skipped
        )
    return sorted(fitting)
