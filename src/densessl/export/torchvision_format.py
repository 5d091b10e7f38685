"""torchvision, timm and safetensors exports: one state dict in torchvision's ResNet names
(timm's ResNets use the same), checked by loading into the real torchvision model before writing.
ViTs go to timm only (:mod:`densessl.export.timm_vit`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from safetensors.torch import save
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.engine.checkpoint import atomic_save, atomic_write
from densessl.errors import ExportError
from densessl.export.result import ExportResult
from densessl.export.timm_cnn import write_timm_cnn
from densessl.export.timm_vit import write_timm_vit
from densessl.models.timm_backbone import TimmBackbone
from densessl.models.vit import ViTBackbone
from densessl.registry import EXPORT_FORMATS

CLASSIFIER_KEYS = frozenset({"fc.weight", "fc.bias"})


def torchvision_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision ResNet names, verified against the real model:
    name -> CPU tensor (a copy), every key of ``torchvision.models.<arch>()`` except ``fc.*``."""
    weights = {k: v.detach().clone().cpu().contiguous() for k, v in backbone.state_dict().items()}
    reference = getattr(torchvision.models, backbone.arch)()
    result = reference.load_state_dict(weights, strict=False)
    if set(result.missing_keys) != CLASSIFIER_KEYS or result.unexpected_keys:
        raise ExportError(
            f"backbone does not match torchvision {backbone.arch}: missing "
            f"{sorted(result.missing_keys)}, unexpected {sorted(result.unexpected_keys)}"
        )
    return weights


def resnet_backbone(modules: dict[str, nn.Module]) -> nn.Module:
    """The exported backbone, if it has a torchvision ResNet layout (``.arch`` names it)."""
    backbone = modules["backbone"]
    if not hasattr(backbone, "arch") or not hasattr(torchvision.models, backbone.arch):
        hint = ""
        if _is_vit(backbone):
            hint = " (ViT backbones export with --format timm)"
        elif isinstance(backbone, TimmBackbone):
            hint = " (timm backbones export with --format timm or smp)"
        raise ExportError(f"no torchvision layout for a {type(backbone).__name__} backbone{hint}")
    return backbone


def _is_vit(backbone: nn.Module) -> bool:
    return isinstance(backbone, ViTBackbone)


def _normalisation_line() -> str:
    return f"inputs: RGB in [0, 1], normalised with mean {IMAGENET_MEAN} and std {IMAGENET_STD}"


@EXPORT_FORMATS.register("torchvision")
def write_torchvision(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Backbone state dict for ``torchvision.models.<arch>`` and detection models' trunks."""
    backbone = resnet_backbone(modules)
    weights = torchvision_state_dict(backbone)
    atomic_save(weights, out)
    arch = backbone.arch
    instructions = f"""\
# classification / feature extraction (missing keys: exactly fc.weight, fc.bias)
model = torchvision.models.{arch}()
model.load_state_dict(torch.load("{out}", weights_only=True), strict=False)
# detection: the trunk of a torchvision R-FPN detector (no key missing or unexpected)
detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(
    weights=None, weights_backbone=None, num_classes=N)  # weights_backbone=None: no download
detector.backbone.body.load_state_dict(torch.load("{out}", weights_only=True))
# (for {arch}: resnet_fpn_backbone(backbone_name="{arch}", weights=None) + FasterRCNN(...))
# {_normalisation_line()}"""
    return ExportResult(out, instructions, len(weights))


@EXPORT_FORMATS.register("timm")
def write_timm(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """ViTs: :mod:`densessl.export.timm_vit`; timm CNNs: :mod:`densessl.export.timm_cnn`;
    ResNets: the torchvision state dict (timm uses the same names)."""
    if _is_vit(modules["backbone"]):
        return write_timm_vit(modules["backbone"], out)
    if isinstance(modules["backbone"], TimmBackbone):
        return write_timm_cnn(modules["backbone"], out)
    backbone = resnet_backbone(modules)
    weights = torchvision_state_dict(backbone)
    atomic_save(weights, out)
    instructions = f"""\
# timm ResNets share torchvision's key names; num_classes=0 drops the classifier
model = timm.create_model("{backbone.arch}", pretrained=True, num_classes=0,
                          pretrained_cfg_overlay=dict(file="{out}"))
# or: timm.create_model("{backbone.arch}", num_classes=0).load_state_dict(
#         torch.load("{out}", weights_only=True))
# {_normalisation_line()}"""
    return ExportResult(out, instructions, len(weights))


@EXPORT_FORMATS.register("safetensors")
def write_safetensors(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """The torchvision state dict as a ``.safetensors`` file (no pickle at all)."""
    backbone = resnet_backbone(modules)
    weights = torchvision_state_dict(backbone)
    metadata = {"format": "pt", "arch": backbone.arch}
    atomic_write(out, lambda f: f.write(save(weights, metadata=metadata)))
    instructions = f"""\
# torchvision names, like --format torchvision (missing keys: exactly fc.weight, fc.bias)
from safetensors.torch import load_file
model = torchvision.models.{backbone.arch}()
model.load_state_dict(load_file("{out}"), strict=False)
# {_normalisation_line()}"""
    return ExportResult(out, instructions, len(weights))
