"""timm export of timm CNN backbones: the full model's names, loaded strictly before writing.

Names are ``timm.create_model(name, num_classes=0)``'s, so it loads strictly; layers
``features_only`` lacks (ConvNeXt's head norm, EfficientNet's ``conv_head``/``bn2``) keep timm's
init and are named in the printed lines. A rebuilt model's stage outputs are checked.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.engine.checkpoint import atomic_save
from densessl.errors import ExportError
from densessl.export.result import ExportResult
from densessl.models.timm_backbone import TimmBackbone


def full_timm_model(backbone: TimmBackbone) -> torch.nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)`` of the backbone, fresh init."""
    return timm.create_model(
        backbone.timm_name, pretrained=False, num_classes=0, **backbone.timm_kwargs
    ).eval()


def timm_cnn_state_dict(backbone: TimmBackbone) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's weights under the full timm model's names, every key of it present: name
    -> CPU tensor (copies), and the keys not pretrained (from a fresh timm model). ExportError
    if a backbone key has no place, or the stage outputs differ."""
    pretrained = {
        k: v.detach().clone().cpu().contiguous() for k, v in backbone.timm_state_dict().items()
    }
    reference = full_timm_model(backbone)
    fresh = reference.state_dict()
    unexpected = sorted(set(pretrained) - set(fresh))
    if unexpected:
        raise ExportError(
            f"{backbone.arch}: {len(unexpected)} backbone keys have no place in timm's "
            f"{backbone.timm_name}, e.g. {unexpected[0]}"
        )
    not_pretrained = [k for k in fresh if k not in pretrained]
    weights = {k: pretrained.get(k, fresh[k].clone()) for k in fresh}
    reference.load_state_dict(weights, strict=True)
    _check_same_pyramid(backbone, reference)
    return weights, not_pretrained


def _check_same_pyramid(backbone: TimmBackbone, reference: torch.nn.Module) -> None:
    probe = torch.randn(1, 3, 64, 64)
    was_training = backbone.training
    try:
        with torch.no_grad():
            ours = backbone.cpu().eval()(probe)["c5"]
            theirs = reference.forward_intermediates(probe, intermediates_only=True)[-1]
    finally:
        backbone.train(was_training)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
        raise ExportError(f"the rebuilt timm {backbone.timm_name} computes another C5")


def _kwargs_text(backbone: TimmBackbone) -> str:
    return "".join(f", {k}={v!r}" for k, v in backbone.timm_kwargs.items())


def write_timm_cnn(backbone: TimmBackbone, out: Path) -> ExportResult:
    """Write the full-model state dict and return how to load it in timm."""
    weights, not_pretrained = timm_cnn_state_dict(backbone)
    atomic_save(weights, out)
    lines = [
        "# every key matched: load with strict=True",
        f'model = timm.create_model("{backbone.timm_name}", pretrained=False, '
        f"num_classes=0{_kwargs_text(backbone)})",
        f'model.load_state_dict(torch.load("{out}", weights_only=True))',
        "# pyramid for dense tasks: model.forward_intermediates(x, intermediates_only=True)",
    ]
    if not_pretrained:
        lines.append(
            f"# not pretrained (timm's fresh init; only the pooled classifier path uses them): "
            f"{', '.join(not_pretrained)}"
        )
    lines.append(
        f"# inputs: RGB in [0, 1], normalised with mean {IMAGENET_MEAN} and std {IMAGENET_STD}"
    )
    return ExportResult(out, "\n".join(lines), len(weights))
