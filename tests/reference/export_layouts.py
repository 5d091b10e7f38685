"""The downstream layouts an export must match, written out here from the target libraries, and
the way back from each target's names to densessl's, written independently of the renaming code
under test (``densessl.export``).

densessl names are ``<part>.<key in that part's state dict>``, with the parts ``backbone`` (a
torchvision ResNet or a timm ViT), ``fpn`` (``lateral_convs.i`` / ``output_convs.i``, each a
``conv`` + ``norm``) and ``box_head`` (``convs.k``, each a ``conv`` + ``norm``, then ``fc``).
"""

from __future__ import annotations

import re

import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN,
    FastRCNNConvFCHead,
    FastRCNNPredictor,
)
from torchvision.models.detection.rpn import RPNHead

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}
LEVELS, HEAD_CONVS = 4, 4  # P2..P5; the 4conv1fc box head


def torchvision_trunk_keys(arch: str) -> set[str]:
    """torchvision's ResNet keys without the classifier: the trunk of its detectors, of timm's
    ResNets and of mmdet's ``ResNet(style="pytorch")``."""
    return {k for k in getattr(torchvision.models, arch)().state_dict() if not k.startswith("fc.")}


# ---------------------------------------------------------------- detectron2


def detectron2_resnet_keys(arch: str) -> set[str]:
    """The trunk keys of detectron2's ResNet (``build_resnet_backbone``), written out from its
    layout: stem ``conv1`` + ``conv1.norm``; stage ``resN`` blocks with ``conv1..conv2`` (basic)
    or ``conv1..conv3`` (bottleneck), each with ``.norm``; a ``shortcut`` (+ ``.norm``) in the
    first block of a stage whose input and output channels differ."""
    bottleneck = arch == "resnet50"
    keys = {"stem.conv1.weight"} | {f"stem.conv1.norm.{f}" for f in BN_FIELDS}
    for stage, blocks in enumerate(BLOCKS[arch], start=2):
        for block in range(blocks):
            convs = [f"conv{i}" for i in range(1, 4 if bottleneck else 3)]
            if block == 0 and (stage > 2 or bottleneck):
                convs.append("shortcut")
            for conv in convs:
                keys.add(f"res{stage}.{block}.{conv}.weight")
                keys |= {f"res{stage}.{block}.{conv}.norm.{f}" for f in BN_FIELDS}
    return keys


def detectron2_head_keys(fc: bool) -> set[str]:
    """detectron2's FPN (``fpn_lateral{2..5}``, ``fpn_output{2..5}``) and ``FastRCNNConvFCHead``
    (``box_head.conv{1..4}``, ``box_head.fc1``) with SyncBN norms (no ``num_batches_tracked``)
    and bias-free convs, as matched by suffix under ``matching_heuristics``."""
    convs = [f"fpn_{kind}{level}" for kind in ("lateral", "output") for level in range(2, 6)]
    convs += [f"box_head.conv{k}" for k in range(1, HEAD_CONVS + 1)]
    keys = {f"{c}.weight" for c in convs} | {f"{c}.norm.{f}" for c in convs for f in BN_FIELDS}
    return keys | ({"box_head.fc1.weight", "box_head.fc1.bias"} if fc else set())


def _block(m: re.Match) -> str:  # detectron2's resN.b -> torchvision's layer{N-1}.b
    return f"backbone.layer{int(m[1]) - 1}.{m[2]}"


_DETECTRON2_TO_DENSESSL = [
    (r"^stem\.conv1\.norm\.", "backbone.bn1."),
    (r"^stem\.conv1\.", "backbone.conv1."),
    (r"^res(\d)\.(\d+)\.shortcut\.norm\.", lambda m: f"{_block(m)}.downsample.1."),
    (r"^res(\d)\.(\d+)\.shortcut\.", lambda m: f"{_block(m)}.downsample.0."),
    (r"^res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda m: f"{_block(m)}.bn{m[3]}."),
    (r"^res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"{_block(m)}.conv{m[3]}."),
    (r"^fpn_lateral(\d)\.norm\.", lambda m: f"fpn.lateral_convs.{int(m[1]) - 2}.norm."),
    (r"^fpn_lateral(\d)\.", lambda m: f"fpn.lateral_convs.{int(m[1]) - 2}.conv."),
    (r"^fpn_output(\d)\.norm\.", lambda m: f"fpn.output_convs.{int(m[1]) - 2}.norm."),
    (r"^fpn_output(\d)\.", lambda m: f"fpn.output_convs.{int(m[1]) - 2}.conv."),
    (r"^box_head\.conv(\d)\.norm\.", lambda m: f"box_head.convs.{int(m[1]) - 1}.norm."),
    (r"^box_head\.conv(\d)\.", lambda m: f"box_head.convs.{int(m[1]) - 1}.conv."),
    (r"^box_head\.fc1\.", "box_head.fc."),
]


# ---------------------------------------------------------------- mmdet


def mmdet_head_keys(fc: bool) -> set[str]:
    """mmdet's ``FPN`` neck with BN (``neck.lateral_convs.i`` / ``neck.fpn_convs.i``, each a
    ``ConvModule``: bias-free ``conv`` + ``bn``) and ``Shared4Conv1FCBBoxHead``
    (``roi_head.bbox_head.shared_convs.k``, then ``shared_fcs.0``)."""
    modules = [f"neck.{kind}.{i}" for kind in ("lateral_convs", "fpn_convs") for i in range(LEVELS)]
    modules += [f"roi_head.bbox_head.shared_convs.{k}" for k in range(HEAD_CONVS)]
    bn = (*BN_FIELDS, "num_batches_tracked")
    keys = {f"{m}.conv.weight" for m in modules} | {f"{m}.bn.{f}" for m in modules for f in bn}
    fc_keys = {"roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.0.bias"}
    return keys | (fc_keys if fc else set())


_MMDET_TO_DENSESSL = [
    (r"^backbone\.", "backbone."),
    (r"^neck\.lateral_convs\.(\d)\.bn\.", r"fpn.lateral_convs.\1.norm."),
    (r"^neck\.lateral_convs\.(\d)\.conv\.", r"fpn.lateral_convs.\1.conv."),
    (r"^neck\.fpn_convs\.(\d)\.bn\.", r"fpn.output_convs.\1.norm."),
    (r"^neck\.fpn_convs\.(\d)\.conv\.", r"fpn.output_convs.\1.conv."),
    (r"^roi_head\.bbox_head\.shared_convs\.(\d)\.bn\.", r"box_head.convs.\1.norm."),
    (r"^roi_head\.bbox_head\.shared_convs\.(\d)\.conv\.", r"box_head.convs.\1.conv."),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "box_head.fc."),
]


# ---------------------------------------------------------------- torchvision detectors


def tiny_v2_detector(fpn_channels: int, head_channels: int, fc_dim: int) -> nn.Module:
    """torchvision's v2 Faster R-CNN, built as ``fasterrcnn_resnet50_fpn_v2`` builds it (BN in
    the FPN, a 2-conv RPN head, a 4conv1fc box head with BN on 7x7 RoIs) on a ResNet-18 trunk
    at the tiny run's widths."""
    stages = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    backbone = BackboneWithFPN(
        torchvision.models.resnet18(), stages, [64, 128, 256, 512], fpn_channels,
        norm_layer=nn.BatchNorm2d,
    )  # fmt: skip
    box_head = FastRCNNConvFCHead(
        (fpn_channels, 7, 7), [head_channels] * HEAD_CONVS, [fc_dim], norm_layer=nn.BatchNorm2d
    )
    return FasterRCNN(
        backbone, rpn_head=RPNHead(fpn_channels, 3, conv_depth=2),
        box_head=box_head, box_predictor=FastRCNNPredictor(fc_dim, 3),
    )  # fmt: skip


def _torchvision_detection_rules() -> list:
    fc = HEAD_CONVS + 1  # the head's Sequential: 4 convs, Flatten, Linear, ReLU
    return [
        (r"^backbone\.body\.", "backbone."),
        (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"fpn.lateral_convs.\1.conv."),
        (r"^backbone\.fpn\.inner_blocks\.(\d)\.1\.", r"fpn.lateral_convs.\1.norm."),
        (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"fpn.output_convs.\1.conv."),
        (r"^backbone\.fpn\.layer_blocks\.(\d)\.1\.", r"fpn.output_convs.\1.norm."),
        (rf"^roi_heads\.box_head\.{fc}\.", "box_head.fc."),
        (r"^roi_heads\.box_head\.(\d)\.0\.", r"box_head.convs.\1.conv."),
        (r"^roi_heads\.box_head\.(\d)\.1\.", r"box_head.convs.\1.norm."),
    ]


# ---------------------------------------------------------------- the way back


def _plain(key: str) -> str:  # torchvision / timm / safetensors: the backbone under its own names
    return f"backbone.{key}"


def _by_rules(rules: list):
    def rename(key: str) -> str:
        for pattern, replacement in rules:
            renamed, count = re.subn(pattern, replacement, key)
            if count:
                return renamed
        raise AssertionError(f"{key!r} has no densessl counterpart")

    return rename


DENSESSL_NAME = {
    "torchvision": _plain,
    "timm": _plain,
    "safetensors": _plain,
    "smp": _plain,  # smp's ResNet encoders are torchvision's ResNets without fc
    "detectron2": _by_rules(_DETECTRON2_TO_DENSESSL),
    "mmdet": _by_rules(_MMDET_TO_DENSESSL),
    "torchvision_detection": _by_rules(_torchvision_detection_rules()),
}
