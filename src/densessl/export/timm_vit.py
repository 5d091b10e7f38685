"""timm export of ViT backbones: timm `VisionTransformer` state dicts, every key matched.

The backbone already uses timm's keys; before writing they are loaded strictly into a fresh
``VisionTransformer(**backbone.timm_kwargs)`` and both models must give the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.engine.checkpoint import atomic_save
from densessl.errors import ExportError
from densessl.export.result import ExportResult
from densessl.models.vit import ViTBackbone

# densessl name -> timm registry name with the same architecture (class-token variant).
TIMM_NAMES = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_small_patch8": "vit_small_patch8_224",
    "vit_base_patch8": "vit_base_patch8_224",
}


def timm_vit_state_dict(backbone: ViTBackbone) -> dict[str, torch.Tensor]:
    """The backbone's weights (name -> CPU copy, exactly the timm model's keys), verified
    against a timm ``VisionTransformer(**timm_kwargs)`` (:class:`ExportError` if the key sets
    or tokens differ)."""
    weights = {k: v.detach().clone().cpu().contiguous() for k, v in backbone.state_dict().items()}
    reference = VisionTransformer(**backbone.timm_kwargs).eval()
    result = reference.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"backbone does not match timm VisionTransformer({backbone.timm_kwargs}): missing "
            f"{sorted(result.missing_keys)}, unexpected {sorted(result.unexpected_keys)}"
        )
    # At the table's own grid neither model resamples; at other sizes timm's antialiased bicubic
    # and densessl's plain one (DINO's) differ, so the probe uses the size of the table.
    probe = torch.randn(1, 3, *backbone.patch_embed.img_size)
    was_training = backbone.training
    try:
        with torch.no_grad():
            ours = backbone.cpu().eval().forward_features(probe)
            theirs = reference.forward_features(probe)
    finally:
        backbone.train(was_training)
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
        raise ExportError("the rebuilt timm model computes different tokens than the backbone")
    return weights


def _format_kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def write_timm_vit(backbone: ViTBackbone, out: Path) -> ExportResult:
    """Write the ViT state dict for timm and return how to rebuild and load it."""
    weights = timm_vit_state_dict(backbone)
    atomic_save(weights, out)
    kwargs = backbone.timm_kwargs
    prefix = "1 class token + " if kwargs["class_token"] else ""
    norm = "after the final norm" if kwargs["final_norm"] else "no final norm (SelfPatch)"
    lines = [
        "# every key matched: load with strict=True",
        "from timm.models.vision_transformer import VisionTransformer",
        f"model = VisionTransformer({_format_kwargs(kwargs)})",
        f'model.load_state_dict(torch.load("{out}", weights_only=True))',
    ]
    if backbone.arch in TIMM_NAMES:
        extra = {k: kwargs[k] for k in ("img_size", "class_token", "global_pool", "final_norm")}
        extra.update(num_classes=0, fc_norm=False, dynamic_img_size=True)
        lines += [
            "# or, the same architecture from timm's registry:",
            f'model = timm.create_model("{TIMM_NAMES[backbone.arch]}", pretrained=False, '
            f"{_format_kwargs(extra)})",
        ]
    lines += [
        f"# tokens = model.forward_features(x): (B, {prefix}h*w, {kwargs['embed_dim']}), {norm};",
        f"# h, w = H // {kwargs['patch_size']}, W // {kwargs['patch_size']}; any input size "
        "(position embeddings are resampled)",
        f"# inputs: RGB in [0, 1], normalised with mean {IMAGENET_MEAN} and std {IMAGENET_STD}",
    ]
    return ExportResult(out, "\n".join(lines), len(weights))
