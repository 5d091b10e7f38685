"""Any timm CNN as a densessl backbone: timm's ``features_only`` pyramid, renamed C2..C5.

``build_backbone("timm/<name>")``: ``timm.create_model(name, features_only=True)``'s stride 4, 8,
16, 32 maps as ``c2..c5``, so every CNN method runs on it. Keys are the ``features_only`` model's;
:meth:`TimmBackbone.timm_key` maps them to the full model's (``stages_1.x`` -> ``stages.1.x``).
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
from torch import nn

from densessl.errors import ConfigError

PREFIX = "timm/"  # backbone names "timm/<timm model name>"
LEVEL_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
# features_only joins a flattened sequential's name and its child's index with "_".
_FLATTENED = re.compile(r"^([A-Za-z]\w*?)_(\d+)(\..*)$")


class TimmBackboneError(ConfigError, ValueError):
    """A timm model that cannot serve as a densessl CNN backbone (one line, exit 2); a
    ValueError too, for callers that catch a backbone's bad arguments."""


class TimmBackbone(nn.Module):
    """A timm ``features_only`` network returning C2..C5.

    Args:
        timm_name: timm model name, e.g. "convnext_tiny", "resnet50d".
        **timm_kwargs: extra ``timm.create_model`` arguments (tests shrink depths and widths).

    Attributes:
        arch: ``"timm/<timm_name>"``.
        body: the ``features_only`` model; ``body.state_dict()`` keys are the backbone's own.
        level_strides: input pixels per cell of each output (read by the dense probes).

    Raises:
        TimmBackboneError: no such model, or no map at stride 4, 8, 16 or 32.
    """

    def __init__(self, timm_name: str, **timm_kwargs: Any) -> None:
        super().__init__()
        self.arch = PREFIX + timm_name
        self.timm_name = timm_name
        self.timm_kwargs = dict(timm_kwargs)
        try:
            self.body = timm.create_model(
                timm_name, pretrained=False, features_only=True, **timm_kwargs
            )
        except RuntimeError as err:  # timm's "Unknown model (...)"
            raise TimmBackboneError(
                f"backbone={self.arch}: timm cannot build {timm_name!r} ({err}); "
                "see timm.list_models()"
            ) from err
        reductions = list(self.body.feature_info.reduction())
        missing = [s for s in LEVEL_STRIDES.values() if s not in reductions]
        if missing:
            raise TimmBackboneError(
                f"backbone={self.arch}: {timm_name} has feature maps at strides {reductions}, "
                f"not at {missing}: densessl CNN methods need strides 4, 8, 16 and 32 (ViTs: "
                "use the vit_* backbones)"
            )
        channels = list(self.body.feature_info.channels())
        # The last map at each stride (a stride can repeat, e.g. a stem followed by a stage).
        self._positions = {
            name: max(i for i, r in enumerate(reductions) if r == stride)
            for name, stride in LEVEL_STRIDES.items()
        }
        self.out_channels = {name: channels[i] for name, i in self._positions.items()}
        self.level_strides = dict(LEVEL_STRIDES)
        self.default_levels = ("c5",)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> ``{"c2": (B, C2, H/4, W/4), ..., "c5": (B, C5, H/32, W/32)}``."""
        maps = self.body(x)
        return {name: maps[i] for name, i in self._positions.items()}

    def timm_key(self, key: str) -> str:
        """A ``body`` key under the full model's name: ``stages_1.blocks.0.x`` ->
        ``stages.1.blocks.0.x``; unchanged when features_only kept the name."""
        match = _FLATTENED.match(key)
        return f"{match.group(1)}.{match.group(2)}{match.group(3)}" if match else key

    def timm_state_dict(self) -> dict[str, torch.Tensor]:
        """``body``'s weights under the names of ``timm.create_model(name, num_classes=0)``."""
        return {self.timm_key(k): v for k, v in self.body.state_dict().items()}

    def body_keys_by_timm_key(self) -> dict[str, str]:
        """The inverse of :meth:`timm_key` over this network's keys (full name -> body name)."""
        return {self.timm_key(k): k for k in self.body.state_dict()}


def build_timm_backbone(name: str, **kwargs: Any) -> TimmBackbone:
    """``"timm/convnext_tiny"`` -> :class:`TimmBackbone` ("convnext_tiny")."""
    return TimmBackbone(name.removeprefix(PREFIX), **kwargs)
