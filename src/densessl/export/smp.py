"""segmentation_models_pytorch export: an encoder state dict for Unet, FPN, DeepLabV3+ ...

ResNets: the torchvision state dict; timm backbones: ``features_only`` weights under ``model.``
(``tu-<name>``). Load with ``model.encoder.load_state_dict(...)``; checked by a strict load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import timm
import torch
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.engine.checkpoint import atomic_save
from densessl.errors import ExportError
from densessl.export.result import ExportResult
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict
from densessl.models.timm_backbone import TimmBackbone
from densessl.registry import EXPORT_FORMATS

# densessl ResNet names that smp has as encoders under the same name.
SMP_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
ENCODER_PREFIX = "model."  # where smp's tu- encoder keeps the timm network


def smp_encoder_name(backbone: nn.Module) -> str:
    """smp's ``encoder_name`` for the backbone: ``"resnet50"`` or ``"tu-convnext_tiny"``."""
    if isinstance(backbone, TimmBackbone):
        return f"tu-{backbone.timm_name}"
    arch = getattr(backbone, "arch", None)
    if arch not in SMP_RESNETS:
        raise ExportError(
            f"smp has no encoder for a {arch or type(backbone).__name__} backbone; it takes "
            f"{', '.join(SMP_RESNETS)} and timm CNNs (timm/<name>); ViTs export with --format timm"
        )
    return arch


def smp_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's state dict for smp, checked with a strict load (see the module docstring)."""
    if not isinstance(backbone, TimmBackbone):
        return torchvision_state_dict(resnet_backbone({"backbone": backbone}))
    weights = {
        ENCODER_PREFIX + k: v.detach().clone().cpu().contiguous()
        for k, v in backbone.body.state_dict().items()
    }
    _strict_load(_reference_encoder(backbone), weights, backbone.arch)
    return weights


def _reference_encoder(backbone: TimmBackbone) -> nn.Module:
    if importlib.util.find_spec("segmentation_models_pytorch") is not None:
        from segmentation_models_pytorch.encoders import get_encoder

        return get_encoder(smp_encoder_name(backbone), weights=None, **backbone.timm_kwargs)
    body = timm.create_model(backbone.timm_name, features_only=True, **backbone.timm_kwargs)
    return nn.ModuleDict({ENCODER_PREFIX.rstrip("."): body})


def _strict_load(encoder: nn.Module, weights: dict[str, torch.Tensor], arch: str) -> None:
    result = encoder.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"{arch} does not fit smp's tu- encoder: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:1]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:1]})"
        )


@EXPORT_FORMATS.register("smp")
def write_smp(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """The backbone as an smp encoder, and how to build and load it."""
    backbone = modules["backbone"]
    encoder_name = smp_encoder_name(backbone)
    weights = smp_state_dict(backbone)
    atomic_save(weights, out)
    extra = ""
    if isinstance(backbone, TimmBackbone):  # smp passes them on to timm.create_model
        extra = "".join(f", {k}={v!r}" for k, v in backbone.timm_kwargs.items())
    instructions = f"""\
# an smp encoder: Unet, FPN, DeepLabV3Plus ... take it the same way (strict load)
import segmentation_models_pytorch as smp
model = smp.Unet("{encoder_name}", encoder_weights=None, classes=N{extra})
model.encoder.load_state_dict(torch.load("{out}", weights_only=True))
# inputs: RGB in [0, 1], normalised with mean {IMAGENET_MEAN} and std {IMAGENET_STD}"""
    return ExportResult(out, instructions, len(weights))
