"""torchvision detector export: backbone + FPN + box head in the ``*_resnet50_fpn_v2`` layout.

The v2 detectors' BN FPN and 4conv1fc box head are what SoCo pretrains (MCL: all but the fc).
One state dict (``backbone.body.*``, ``backbone.fpn.*``, ``roi_heads.box_head.*``); with
``strict=False`` only the RPN, predictors (and mask branch; MCL's box fc) are missing.
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
from densessl.errors import ExportError
from densessl.export.detection_heads import has_detection_heads, head_weights, torchvision_names
from densessl.export.result import ExportResult
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict
from densessl.registry import EXPORT_FORMATS

STAGES = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
DEFAULT_ROI, DEFAULT_FC_DIM = 7, 1024  # torchvision's v2 box head, when no fc was pretrained


class _DetectorLayout(nn.Module):
    """The pretrained part of a torchvision v2 R-FPN detector, from torchvision's own pieces,
    for any ResNet and head width: what the export is strictly checked against."""

    def __init__(self, arch: str, fpn: nn.Module, box_head: nn.Module) -> None:
        super().__init__()
        trunk = getattr(torchvision.models, arch)(weights=None)  # nothing is downloaded
        in_channels = [conv.conv.in_channels for conv in fpn.lateral_convs]
        self.backbone = BackboneWithFPN(
            trunk, STAGES, in_channels, fpn.out_channels, LastLevelMaxPool(), nn.BatchNorm2d
        )
        convs = [conv.conv.out_channels for conv in box_head.convs]
        fc = getattr(box_head, "fc", None)  # MCL pretrains the convs only
        roi = round((fc.in_features / convs[-1]) ** 0.5) if fc is not None else DEFAULT_ROI
        fc_dim = fc.out_features if fc is not None else DEFAULT_FC_DIM
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = FastRCNNConvFCHead(
            (fpn.out_channels, roi, roi), convs, [fc_dim], nn.BatchNorm2d
        )


def detector_state_dict(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Backbone, FPN and box head under torchvision v2 detector names, verified
    (:class:`ExportError` if the run has none or the layout does not match)."""
    if not has_detection_heads(modules):
        raise ExportError(
            "this run pretrained only a backbone; --format torchvision_detection needs an FPN "
            "and a box head (SoCo, MCL). Use --format torchvision for the backbone"
        )
    backbone = resnet_backbone(modules)
    weights = {f"backbone.body.{k}": v for k, v in torchvision_state_dict(backbone).items()}
    weights.update(torchvision_names(head_weights(modules)))
    reference = _DetectorLayout(backbone.arch, modules["fpn"], modules["box_head"])
    try:
        outcome = reference.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a shape differs
        raise ExportError(f"FPN/box head do not match torchvision's layout: {err}") from err
    # Only the box head's fc may stay unfilled, and only when the run pretrained none (MCL).
    fc_index = len(modules["box_head"].convs) + 1
    allowed = () if hasattr(modules["box_head"], "fc") else (f"roi_heads.box_head.{fc_index}.",)
    missing = [k for k in outcome.missing_keys if not k.startswith(allowed)]
    if missing or outcome.unexpected_keys:
        raise ExportError(
            f"FPN/box head do not match torchvision's layout: missing {missing[:5]}, "
            f"unexpected {outcome.unexpected_keys[:5]}"
        )
    return weights


@EXPORT_FORMATS.register("torchvision_detection")
def write_torchvision_detection(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Write the detector-layout state dict; return it and the loading code."""
    weights = detector_state_dict(modules)
    atomic_save(weights, out)
    fc_key = f"roi_heads.box_head.{len(modules['box_head'].convs) + 1}.*"
    fc_note = "" if hasattr(modules["box_head"], "fc") else f" and {fc_key} (no fc pretrained)"
    instructions = f"""\
# torchvision Faster/Mask R-CNN v2 (BN in the FPN, 4conv1fc box head with BN)
model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(  # or fasterrcnn_resnet50_fpn_v2
    weights=None, weights_backbone=None, num_classes=N)  # weights_backbone=None: no download
result = model.load_state_dict(torch.load("{out}", weights_only=True), strict=False)
# missing: only rpn.head.*, roi_heads.box_predictor.*{fc_note} (and roi_heads.mask_head.*,
# roi_heads.mask_predictor.* for Mask R-CNN); unexpected: none. ResNet-50 only for the v2
# builders; other depths: BackboneWithFPN + FastRCNNConvFCHead(norm_layer=BatchNorm2d).
# inputs: RGB, ImageNet mean/std (torchvision's detectors normalise internally with these)"""
    return ExportResult(out, instructions, len(weights))
