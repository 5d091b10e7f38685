"""torchvision detector export: backbone + FPN + box head in the ``*_resnet50_fpn_v2`` layout.

torchvision's v2 Faster/Mask R-CNN (``fasterrcnn_resnet50_fpn_v2``, ``maskrcnn_resnet50_fpn_v2``)
has BN in its FPN and a 4conv1fc box head with BN, the modules SoCo pretrains. The file is one
state dict under the detector's own names (``backbone.body.*``, ``backbone.fpn.*``,
``roi_heads.box_head.*``; see :mod:`densessl.export.detection_heads`); it loads with
``strict=False`` and exactly the RPN and predictor keys (plus the mask branch) missing.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from densessl.engine.checkpoint import atomic_save
from densessl.export import ExportError, ExportResult
from densessl.export.detection_heads import has_detection_heads, head_weights, torchvision_names
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict

STAGES = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


class _DetectorLayout(nn.Module):
    """The pretrained part of a torchvision v2 R-FPN detector, built from torchvision's own
    pieces as its ``fasterrcnn_resnet50_fpn_v2`` does, for any ResNet and head width: the
    reference the export is checked against (strict load, no key left over on either side)."""

    def __init__(self, arch: str, fpn: nn.Module, box_head: nn.Module) -> None:
        super().__init__()
        trunk = getattr(torchvision.models, arch)(weights=None)  # nothing is downloaded
        in_channels = [conv.conv.in_channels for conv in fpn.lateral_convs]
        self.backbone = BackboneWithFPN(
            trunk, STAGES, in_channels, fpn.out_channels, LastLevelMaxPool(), nn.BatchNorm2d
        )
        convs = [conv.conv.out_channels for conv in box_head.convs]
        roi = round((box_head.fc.in_features / convs[-1]) ** 0.5)
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = FastRCNNConvFCHead(
            (fpn.out_channels, roi, roi), convs, [box_head.fc.out_features], nn.BatchNorm2d
        )


def detector_state_dict(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Backbone, FPN and box head under torchvision v2 detector names, verified.

    Raises:
        ExportError: the run has no pretrained FPN/box head, or the layout does not match.
    """
    if not has_detection_heads(modules):
        raise ExportError(
            "this run pretrained only a backbone; --format torchvision_detection needs an FPN "
            "and a box head (SoCo). Use --format torchvision for the backbone"
        )
    backbone = resnet_backbone(modules)
    weights = {f"backbone.body.{k}": v for k, v in torchvision_state_dict(backbone).items()}
    weights.update(torchvision_names(head_weights(modules)))
    reference = _DetectorLayout(backbone.arch, modules["fpn"], modules["box_head"])
    try:
        reference.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ExportError(f"FPN/box head do not match torchvision's layout: {err}") from err
    return weights


def write_torchvision_detection(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Write the detector-layout state dict; return it and the loading code."""
    weights = detector_state_dict(modules)
    atomic_save(weights, out)
    instructions = f"""\
# torchvision Faster/Mask R-CNN v2 (BN in the FPN, 4conv1fc box head with BN)
model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(  # or fasterrcnn_resnet50_fpn_v2
    weights=None, weights_backbone=None, num_classes=N)  # weights_backbone=None: no download
result = model.load_state_dict(torch.load("{out}", weights_only=True), strict=False)
# missing: only rpn.head.*, roi_heads.box_predictor.* (and roi_heads.mask_head.*,
# roi_heads.mask_predictor.* for Mask R-CNN); unexpected: none. ResNet-50 only for the v2
# builders; other depths: BackboneWithFPN + FastRCNNConvFCHead(norm_layer=BatchNorm2d).
# inputs: RGB, ImageNet mean/std (torchvision's detectors normalise internally with these)"""
    return ExportResult(out, instructions, len(weights))
