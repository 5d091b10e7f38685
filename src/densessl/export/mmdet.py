"""MMDetection export: ``{"state_dict": {"backbone.<torchvision name>": ...}, "meta": ...}``.

mmdet's ``ResNet(style="pytorch")`` uses torchvision's names, so keys only gain ``backbone.``.
The printed config loads them with SyncBN, no frozen stage, ``norm_eval=False`` and RGB ImageNet
normalisation; a pretrained FPN and box head (SoCo's mmdet converter's layout) via ``load_from``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from densessl.engine.checkpoint import atomic_save
from densessl.export.detection_heads import has_detection_heads, head_weights, mmdet_names
from densessl.export.detectron2 import pixel_statistics
from densessl.export.result import ExportResult
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict
from densessl.registry import EXPORT_FORMATS

PREFIX = "backbone."
_FPN_IN_CHANNELS = {"resnet18": [64, 128, 256, 512], "resnet34": [64, 128, 256, 512]}


def config_lines(path: Path, arch: str, heads: bool = False) -> str:
    """The mmdet (3.x) config fragment that goes with the file; ``heads`` adds the pretrained
    neck and box head (loaded with ``load_from``)."""
    mean, std = pixel_statistics()
    ending = ")"
    if heads:  # the pretrained 4conv1fc head, and the whole checkpoint loaded into the detector
        ending = f"""\
    roi_head=dict(bbox_head=dict(type="Shared4Conv1FCBBoxHead", norm_cfg=norm_cfg)),
)
load_from = "{path}"  # backbone, neck and box head"""
    depth = int(arch.removeprefix("resnet"))
    neck = ""
    if arch in _FPN_IN_CHANNELS:
        neck = f"in_channels={_FPN_IN_CHANNELS[arch]}, "
    return f"""\
# mmdet config fragment (mmdet 3.x names)
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    data_preprocessor=dict(mean={mean}, std={std}, bgr_to_rgb=True),
    backbone=dict(
        depth={depth}, style="pytorch", frozen_stages=-1, norm_eval=False, norm_cfg=norm_cfg,
        init_cfg=dict(type="Pretrained", checkpoint="{path}", prefix="backbone."),
    ),
    neck=dict({neck}norm_cfg=norm_cfg),
{ending}"""


@EXPORT_FORMATS.register("mmdet")
def write(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Write the backbone under ``backbone.`` keys in an MMEngine checkpoint container."""
    backbone = resnet_backbone(modules)
    weights = torchvision_state_dict(backbone)
    state_dict = {PREFIX + k: v for k, v in weights.items()}
    heads = has_detection_heads(modules)
    if heads:
        state_dict.update(mmdet_names(head_weights(modules)))
    meta = {"author": "densessl", "arch": backbone.arch, "layout": "torchvision ResNet names"}
    atomic_save({"state_dict": state_dict, "meta": meta}, out)
    return ExportResult(out, config_lines(out, backbone.arch, heads), len(state_dict))
