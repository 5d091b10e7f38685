"""A segmentation network around a pretrained backbone, for fine-tuning.

CNN backbones get a segmentation_models_pytorch decoder (FPN or Unet) on smp's own encoder,
loaded strictly with what ``densessl export --format smp`` writes. ViTs (no smp encoder) get the
linear probe's head (BatchNorm + 1x1 conv, bilinear upsampling: SETR's "naive" head).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from densessl.errors import ConfigError, ExportError
from densessl.export.smp import smp_encoder_name, smp_state_dict
from densessl.models.timm_backbone import TimmBackbone
from densessl.models.vit import ViTBackbone

DECODERS = ("fpn", "unet", "linear")
SMP_DECODERS = {"fpn": "FPN", "unet": "Unet"}
SMP_EXTRA = "finetune"  # the extra that installs segmentation_models_pytorch


class LinearSegmenter(nn.Module):
    """Backbone + BatchNorm2d + 1x1 conv on its finest default level, upsampled to the input:
    (B, 3, H, W) -> (B, num_classes, H, W)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.level = getattr(backbone, "default_levels", ("c5",))[0]
        channels = backbone.out_channels[self.level]
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.Conv2d(channels, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)[self.level]
        logits = self.head(features.float())
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(backbone: nn.Module, decoder: str, num_classes: int, seed: int) -> nn.Module:
    """The backbone inside a segmentation network with a fresh decoder, initialised from
    ``seed`` alone so every backbone compared at one seed starts from the same decoder
    (:class:`ConfigError`: unknown decoder, smp's for a ViT, or smp missing)."""
    if decoder not in DECODERS:
        raise ConfigError(f"decoder={decoder!r} is not one of {', '.join(DECODERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if decoder == "linear":
            return LinearSegmenter(backbone, num_classes)
        return _smp_segmenter(backbone, decoder, num_classes)


def _smp_segmenter(backbone: nn.Module, decoder: str, num_classes: int) -> nn.Module:
    if isinstance(backbone, ViTBackbone):
        raise ConfigError(
            f"decoder={decoder} needs a CNN encoder and smp has none for a ViT "
            f"({backbone.arch}); use decoder=linear"
        )
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise ConfigError(
            f"decoder={decoder} uses segmentation_models_pytorch, which is not installed: "
            f"pip install 'densessl[{SMP_EXTRA}]' (or use decoder=linear)"
        )
    import segmentation_models_pytorch as smp

    try:
        encoder_name = smp_encoder_name(backbone)
    except ExportError as err:
        raise ConfigError(f"decoder={decoder}: {err}") from err
    extra = backbone.timm_kwargs if isinstance(backbone, TimmBackbone) else {}
    model = getattr(smp, SMP_DECODERS[decoder])(
        encoder_name=encoder_name, encoder_weights=None, classes=num_classes, **extra
    )
    model.encoder.load_state_dict(smp_state_dict(backbone), strict=True)
    return model
