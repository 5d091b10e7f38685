"""Model building blocks: backbones (ResNet, ViT), heads, EMA teacher, negative queue, batch norm.

Importing this package registers the backbones in ``densessl.registry.BACKBONES``.
"""

from densessl.models import backbones, ema, heads, norm, queue, vit  # noqa: F401  (registration)
from densessl.models.backbones import ResNetBackbone, build_backbone
from densessl.models.ema import ema_update_, make_teacher
from densessl.models.heads import DenseHead, MLPHead
from densessl.models.norm import GlobalBatchNorm1d, GlobalBatchNorm2d, convert_batchnorm
from densessl.models.queue import NegativeQueue
from densessl.models.vit import ViTBackbone

__all__ = [
    "DenseHead",
    "GlobalBatchNorm1d",
    "GlobalBatchNorm2d",
    "MLPHead",
    "NegativeQueue",
    "ResNetBackbone",
    "ViTBackbone",
    "build_backbone",
    "convert_batchnorm",
    "ema_update_",
    "make_teacher",
]
