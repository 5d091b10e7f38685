"""detectron2 export: a model-zoo ``.pkl`` of numpy arrays under detectron2's ResNet names.

Renaming (detectron2's ``tools/convert-torchvision-to-d2.py``): non-``layerN`` keys get
``stem.``; ``layer1..4`` -> ``res2..5``; ``bnK`` -> ``convK.norm``; ``downsample.0/.1`` ->
``shortcut``/``shortcut.norm``; ``num_batches_tracked`` dropped; ``matching_heuristics: True``.
A pretrained FPN and box head are added (:mod:`densessl.export.detection_heads`). The config
lines switch Caffe defaults to torchvision weights (RGB mean/std in 0-255, ``INPUT.FORMAT RGB``,
``RESNETS.STRIDE_IN_1X1 False``) and add SyncBN and ``FREEZE_AT 0`` (the SSL transfer protocol).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.engine.checkpoint import atomic_write
from densessl.export.detection_heads import detectron2_names, has_detection_heads, head_weights
from densessl.export.result import ExportResult
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict
from densessl.registry import EXPORT_FORMATS

AUTHOR = "densessl"
_BASIC_BLOCK_ARCHS = ("resnet18", "resnet34")


def detectron2_name(key: str) -> str:
    """torchvision ResNet key -> detectron2 key, e.g. ``layer1.0.bn3.weight`` ->
    ``res2.0.conv3.norm.weight`` and ``bn1.running_mean`` -> ``stem.conv1.norm.running_mean``."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"\bbn(\d)\b", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_weights(weights: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Renamed numpy copies of a torchvision ResNet state dict, ``num_batches_tracked`` dropped."""
    return {
        detectron2_name(k): v.numpy()
        for k, v in weights.items()
        if not k.endswith("num_batches_tracked")
    }


def pixel_statistics() -> tuple[list[float], list[float]]:
    """ImageNet RGB mean and std in detectron2's 0-255 units."""
    return [round(255 * m, 3) for m in IMAGENET_MEAN], [round(255 * s, 3) for s in IMAGENET_STD]


def config_lines(path: Path, arch: str, box_head: bool = False) -> str:
    """The detectron2 YAML that must accompany the file (FPN models); ``box_head`` adds the
    pretrained 4conv1fc head's settings."""
    mean, std = pixel_statistics()
    head = ""
    if box_head:  # the pretrained 4conv1fc head
        head = (
            '\n  ROI_BOX_HEAD:\n    NAME: "FastRCNNConvFCHead"\n    NUM_CONV: 4\n    NUM_FC: 1'
            '\n    NORM: "SyncBN"'
        )
    depth = int(arch.removeprefix("resnet"))
    basic = "\n    RES2_OUT_CHANNELS: 64  # basic blocks" if arch in _BASIC_BLOCK_ARCHS else ""
    return f"""\
# detectron2 config (merge into your R-FPN YAML, or pass as KEY VALUE pairs)
MODEL:
  WEIGHTS: "{path}"
  PIXEL_MEAN: {mean}
  PIXEL_STD: {std}
  BACKBONE:
    FREEZE_AT: 0
  RESNETS:
    DEPTH: {depth}
    STRIDE_IN_1X1: False  # torchvision puts the stride in the 3x3 conv{basic}
    NORM: "SyncBN"
  FPN:
    NORM: "SyncBN"{head}
INPUT:
  FORMAT: "RGB"
TEST:
  PRECISE_BN:
    ENABLED: True"""


@EXPORT_FORMATS.register("detectron2")
def write(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Write the backbone as a detectron2 model-zoo pickle; return it and the config lines."""
    backbone = resnet_backbone(modules)
    model = detectron2_weights(torchvision_state_dict(backbone))
    heads = has_detection_heads(modules)
    if heads:
        model.update({k: v.numpy() for k, v in detectron2_names(head_weights(modules)).items()})
    document = {"model": model, "__author__": AUTHOR, "matching_heuristics": True}
    atomic_write(out, lambda f: pickle.dump(document, f, protocol=pickle.HIGHEST_PROTOCOL))
    return ExportResult(out, config_lines(out, backbone.arch, heads), len(model))
