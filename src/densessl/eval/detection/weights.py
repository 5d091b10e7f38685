"""What ``densessl eval detect --weights`` starts from: the trunk, plus a pretrained FPN and box
head when the source has them.

FPN / box-head weights come from a run whose ``exportable()`` has ``fpn`` and ``box_head``
(SoCo) or a ``torchvision_detection`` export; none from anything else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from densessl.errors import WeightsError

# load_backbone's own steps (reading a file, building a trunk from torchvision keys, rebuilding
# a run); reusing them keeps both loaders' errors identical.
from densessl.eval.weights import (
    RANDOM,
    STATE_DICT_SUFFIXES,
    backbone_from_state_dict,
    load_backbone,
    read_weights_file,
    run_modules,
)
from densessl.export.detection_heads import has_detection_heads, head_weights, torchvision_names
from densessl.models.backbones import ResNetBackbone
from densessl.runs import CHECKPOINT_FORMAT

TRUNK_PREFIX = "backbone.body."
HEAD_PREFIXES = ("backbone.fpn.", "roi_heads.box_head.")


def load_detection_weights(
    weights: str | Path, backbone: str | None = None, network: str | None = None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``(backbone, heads)`` of ``weights``, on the CPU: the backbone in eval mode, and
    ``{torchvision v2 name: tensor}`` for the pretrained FPN and box head, empty when the source
    pretrained none. ``weights``, ``backbone`` and ``network`` as
    :func:`~densessl.eval.weights.load_backbone` (or a ``torchvision_detection`` export);
    WeightsError as there, or for a timm CNN / ViT backbone.
    """
    model, heads = _read_detection_weights(weights, backbone, network)
    if not isinstance(model, ResNetBackbone):
        arch = getattr(model, "arch", type(model).__name__)
        raise WeightsError(
            f"eval detect builds torchvision's ResNet-FPN detectors, which cannot take the {arch} "
            f"backbone of {weights}; export it (--format timm or smp) for a library that does"
        )
    return model, heads


def _read_detection_weights(
    weights: str | Path, backbone: str | None, network: str | None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    path = Path(str(weights))
    if str(weights) != RANDOM and path.is_dir():
        return _from_run(path, backbone, network)
    if str(weights) == RANDOM or not path.is_file() or path.suffix not in STATE_DICT_SUFFIXES:
        # Nothing to add here: load_backbone's random backbone, or its error message.
        return load_backbone(weights, backbone, network), {}
    state = read_weights_file(path)
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return _from_run(path, backbone, network, state)
    heads = _head_keys(state)
    if not heads:
        return backbone_from_state_dict(path, state, backbone), heads
    # A torchvision_detection export: the trunk under the detector's names.
    trunk = {k.removeprefix(TRUNK_PREFIX): v for k, v in state.items()
             if k.startswith(TRUNK_PREFIX)}  # fmt: skip
    if not trunk:
        raise WeightsError(f"{path} holds an FPN / box head but no {TRUNK_PREFIX}* trunk")
    return backbone_from_state_dict(path, trunk, backbone), heads


def _head_keys(state: object) -> dict[str, torch.Tensor]:
    """The FPN / box-head entries of a detector-layout state dict; {} for anything else."""
    if not isinstance(state, dict):
        return {}
    return {
        k: v
        for k, v in state.items()
        if isinstance(k, str) and k.startswith(HEAD_PREFIXES) and isinstance(v, torch.Tensor)
    }


def _from_run(
    path: Path, arch: str | None, network: str | None, state: dict | None = None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    # One load: the trunk and the heads come from the same network.
    modules = run_modules(path, arch, network, state)
    heads = torchvision_names(head_weights(modules)) if has_detection_heads(modules) else {}
    return modules["backbone"].cpu().eval(), heads
