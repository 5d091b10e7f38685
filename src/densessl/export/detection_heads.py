"""Pretrained FPN and box head (SoCo) under each downstream library's names.

Renaming rules, for pyramid level i = 0..3 (P2..P5) and head conv k = 0..3:

torchvision (``fasterrcnn/maskrcnn_resnet50_fpn_v2``)::

    fpn.lateral_convs.i.conv / .norm  ->  backbone.fpn.inner_blocks.i.0 / .1
    fpn.output_convs.i.conv / .norm   ->  backbone.fpn.layer_blocks.i.0 / .1
    box_head.convs.k.conv / .norm     ->  roi_heads.box_head.k.0 / .1
    box_head.fc                       ->  roi_heads.box_head.{num_convs + 1}

detectron2 (``FastRCNNConvFCHead``; matched by suffix; no ``num_batches_tracked``)::

    fpn.lateral_convs.i.conv / .norm  ->  fpn_lateral{i+2} / fpn_lateral{i+2}.norm
    fpn.output_convs.i.conv / .norm   ->  fpn_output{i+2} / fpn_output{i+2}.norm
    box_head.convs.k.conv / .norm     ->  box_head.conv{k+1} / box_head.conv{k+1}.norm
    box_head.fc                       ->  box_head.fc1

mmdet (``FPN``, ``Shared4Conv1FCBBoxHead``; SoCo's mmdet converter)::

    fpn.lateral_convs.i.conv / .norm  ->  neck.lateral_convs.i.conv / .bn
    fpn.output_convs.i.conv / .norm   ->  neck.fpn_convs.i.conv / .bn
    box_head.convs.k.conv / .norm     ->  roi_head.bbox_head.shared_convs.k.conv / .bn
    box_head.fc                       ->  roi_head.bbox_head.shared_fcs.0
"""

from __future__ import annotations

import re

import torch
from torch import nn

BN_BUFFER = "num_batches_tracked"


def has_detection_heads(modules: dict[str, nn.Module]) -> bool:
    return "fpn" in modules and "box_head" in modules


def head_weights(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """CPU copies of the FPN and box-head weights, densessl names (``fpn.*``, ``box_head.*``)."""
    return {
        f"{role}.{key}": value.detach().clone().cpu().contiguous()
        for role in ("fpn", "box_head")
        for key, value in modules[role].state_dict().items()
    }


def _num_convs(weights: dict[str, torch.Tensor]) -> int:
    return len({m.group(1) for k in weights if (m := re.match(r"box_head\.convs\.(\d+)\.", k))})


def torchvision_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """densessl head names -> torchvision ``fasterrcnn_resnet50_fpn_v2`` names."""
    fc_index = _num_convs(weights) + 1  # the head's Sequential: convs, Flatten, Linear, ReLU
    rules = [
        (r"^fpn\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
        (r"^fpn\.lateral_convs\.(\d+)\.norm\.", r"backbone.fpn.inner_blocks.\1.1."),
        (r"^fpn\.output_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
        (r"^fpn\.output_convs\.(\d+)\.norm\.", r"backbone.fpn.layer_blocks.\1.1."),
        (r"^box_head\.convs\.(\d+)\.conv\.", r"roi_heads.box_head.\1.0."),
        (r"^box_head\.convs\.(\d+)\.norm\.", r"roi_heads.box_head.\1.1."),
        (r"^box_head\.fc\.", f"roi_heads.box_head.{fc_index}."),
    ]
    return {_rename(k, rules): v for k, v in weights.items()}


def detectron2_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """densessl head names -> detectron2 FPN / ``FastRCNNConvFCHead`` names (suffixes)."""
    rules = [
        (r"^fpn\.lateral_convs\.(\d+)\.conv\.", lambda m: f"fpn_lateral{int(m[1]) + 2}."),
        (r"^fpn\.lateral_convs\.(\d+)\.norm\.", lambda m: f"fpn_lateral{int(m[1]) + 2}.norm."),
        (r"^fpn\.output_convs\.(\d+)\.conv\.", lambda m: f"fpn_output{int(m[1]) + 2}."),
        (r"^fpn\.output_convs\.(\d+)\.norm\.", lambda m: f"fpn_output{int(m[1]) + 2}.norm."),
        (r"^box_head\.convs\.(\d+)\.conv\.", lambda m: f"box_head.conv{int(m[1]) + 1}."),
        (r"^box_head\.convs\.(\d+)\.norm\.", lambda m: f"box_head.conv{int(m[1]) + 1}.norm."),
        (r"^box_head\.fc\.", "box_head.fc1."),
    ]
    return {_rename(k, rules): v for k, v in weights.items() if not k.endswith(BN_BUFFER)}


def mmdet_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """densessl head names -> mmdet ``FPN`` / ``Shared4Conv1FCBBoxHead`` names."""
    rules = [
        (r"^fpn\.lateral_convs\.(\d+)\.conv\.", r"neck.lateral_convs.\1.conv."),
        (r"^fpn\.lateral_convs\.(\d+)\.norm\.", r"neck.lateral_convs.\1.bn."),
        (r"^fpn\.output_convs\.(\d+)\.conv\.", r"neck.fpn_convs.\1.conv."),
        (r"^fpn\.output_convs\.(\d+)\.norm\.", r"neck.fpn_convs.\1.bn."),
        (r"^box_head\.convs\.(\d+)\.conv\.", r"roi_head.bbox_head.shared_convs.\1.conv."),
        (r"^box_head\.convs\.(\d+)\.norm\.", r"roi_head.bbox_head.shared_convs.\1.bn."),
        (r"^box_head\.fc\.", "roi_head.bbox_head.shared_fcs.0."),
    ]
    return {_rename(k, rules): v for k, v in weights.items()}


def _rename(key: str, rules: list) -> str:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ValueError(f"no export name for {key!r}")
