"""The four timm CNNs the issue names, at sizes a CPU test can step in a fraction of a second.

Each is the real timm architecture (same code path, same key names), shrunk through timm's own
constructor arguments where it has them; RegNetY-200MF and EfficientNet-B0 are small enough as
they are. They are registered once as ``test_timm_<name>`` so that runs (and the runs that
export re-opens) can name them in their config.
"""

from __future__ import annotations

from functools import partial

from densessl.models.timm_backbone import TimmBackbone
from densessl.registry import BACKBONES

# timm name -> constructor arguments that shrink it.
TINY_TIMM: dict[str, dict] = {
    "convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)},
    "regnety_002": {},
    "efficientnet_b0": {},
    "resnet50d": {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64)},
}


def tiny_timm_name(timm_name: str) -> str:
    """The registered densessl name of the tiny ``timm_name``."""
    return f"test_timm_{timm_name}"


for _name, _kwargs in TINY_TIMM.items():
    if tiny_timm_name(_name) not in BACKBONES:
        BACKBONES.register(tiny_timm_name(_name))(partial(TimmBackbone, _name, **_kwargs))
