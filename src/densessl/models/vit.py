"""Vision Transformer backbones (timm's ``VisionTransformer``) returning the patch-token grid.

A subclass of timm's ``VisionTransformer`` (only ``forward`` differs), so an export loads into
``VisionTransformer(**backbone.timm_kwargs)`` strictly. Position embeddings are resampled
bicubically without antialias (DINO's ``interpolate_pos_encoding``), so crops of every size share
one table. ``cls_token`` starts truncated-normal (std 0.02) as DINO's, not timm's 1e-6.
Letters: B images, D width, p patch size, (h, w) = (H // p, W // p) the token grid.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import DropPath, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from densessl.registry import BACKBONES

# name -> (patch size, embed dim, depth, heads). DINO/DeiT widths; the "test" ones keep unit
# tests within seconds on a CPU (timm keeps ``test_vit`` models for the same reason).
VIT_SPECS: dict[str, tuple[int, int, int, int]] = {
    "vit_test_patch8": (8, 48, 2, 3),
    "vit_test_patch16": (16, 48, 2, 3),
    "vit_tiny_patch16": (16, 192, 12, 3),
    "vit_tiny_patch8": (8, 192, 12, 3),
    "vit_small_patch16": (16, 384, 12, 6),
    "vit_small_patch8": (8, 384, 12, 6),
    "vit_base_patch16": (16, 768, 12, 12),
    "vit_base_patch8": (8, 768, 12, 12),
}


def vit_timm_kwargs(
    arch: str, class_token: bool = True, final_norm: bool = True, img_size: int = 224
) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments that rebuild a densessl ViT backbone in timm:
    ``num_classes=0``, ``fc_norm=False`` (``norm`` on every token, as DINO),
    ``dynamic_img_size=True``."""
    if arch not in VIT_SPECS:
        raise ValueError(f"unknown ViT arch {arch!r}; known: {', '.join(VIT_SPECS)}")
    patch, dim, depth, heads = VIT_SPECS[arch]
    return dict(
        img_size=img_size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        class_token=class_token,
        global_pool="token" if class_token else "avg",
        final_norm=final_norm,
        fc_norm=False,
        num_classes=0,
        dynamic_img_size=True,
    )


class ViTBackbone(VisionTransformer):
    """A timm ViT (random init, nothing downloaded) whose forward returns the token grid.

    Args:
        arch: a key of :data:`VIT_SPECS`, e.g. "vit_small_patch16".
        class_token: keep the [CLS] token (DINO) or not (SelfPatch).
        final_norm: apply the final LayerNorm to every token (DINO) or not (SelfPatch).
        img_size: input side the position-embedding table is laid out for (others resample).
        drop_path_rate: stochastic depth, linearly increasing over the blocks.

    Attributes:
        out_channels: {"patch": D} (and {"cls": D} with a class token).
        level_strides: {"patch": p}, input pixels per grid cell (read by the dense probes).
    """

    def __init__(
        self,
        arch: str,
        class_token: bool = True,
        final_norm: bool = True,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
    ) -> None:
        kwargs = vit_timm_kwargs(arch, class_token, final_norm, img_size)
        super().__init__(**kwargs, drop_path_rate=drop_path_rate)
        self.arch = arch
        self.timm_kwargs = kwargs
        self.patch_size = int(kwargs["patch_size"])
        self.out_channels = {"patch": self.embed_dim}
        if class_token:
            self.out_channels["cls"] = self.embed_dim
        self.level_strides = {"patch": self.patch_size}
        self.default_levels = ("patch",)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)  # DINO's init (timm: std 1e-6)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings (timm's ``dynamic_img_size`` layout) -> (B, prefix + h·w,
        D) tokens: class token prepended, position embeddings resampled to the grid added."""
        batch, h, w, dim = x.shape
        pos_embed = resample_abs_pos_embed(
            self.pos_embed,
            new_size=(h, w),
            old_size=self.patch_embed.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            interpolation="bicubic",
            antialias=False,
        )
        tokens = x.reshape(batch, h * w, dim)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        return self.pos_drop(tokens + pos_embed)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """(B, 3, H, W) images, any size (a remainder under a patch is dropped) ->
        ``{"patch": (B, D, h, w)}`` last-block tokens (after the final norm if any) as a map,
        plus ``"cls": (B, D)`` with a class token."""
        batch = x.shape[0]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.forward_features(x)  # (B, prefix + h*w, D)
        patches = tokens[:, self.num_prefix_tokens :]  # (B, h*w, D), row-major over the grid
        out = {"patch": patches.transpose(1, 2).reshape(batch, self.embed_dim, h, w)}
        if self.has_class_token:
            out["cls"] = tokens[:, 0]
        return out


def patch_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) token map -> (B, h*w, D) tokens, row-major (a view, no copy)."""
    return grid.flatten(2).transpose(1, 2)


def disable_drop_path_(module: nn.Module) -> nn.Module:
    """Turn off stochastic depth in place (DINO's teacher is built with drop_path_rate 0)."""
    for m in module.modules():
        if isinstance(m, DropPath):
            m.drop_prob = 0.0
    return module


for _arch in VIT_SPECS:
    # The class itself, bound to its arch name: build_backbone(name, **kwargs) -> ViTBackbone.
    BACKBONES.register(_arch)(partial(ViTBackbone, _arch))
