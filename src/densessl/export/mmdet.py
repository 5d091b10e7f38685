"""MMDetection export: ``{"state_dict": {"backbone.<torchvision name>": ...}, "meta": ...}``.

mmdet's ``ResNet(style="pytorch")`` uses torchvision's names (``conv1``, ``bn1``,
``layerN.M.convK``/``bnK``, ``downsample.0/1``) and puts the stride in the 3x3 conv like
torchvision, so the backbone keys only gain the ``backbone.`` prefix. The printed config loads
them with ``init_cfg=dict(type="Pretrained", prefix="backbone.")`` and sets what SSL transfer
needs: SyncBN everywhere, no frozen stage, BN statistics updated (``norm_eval=False``), and the
RGB ImageNet normalisation of pretraining.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from densessl.engine.checkpoint import atomic_save
from densessl.export import ExportResult
from densessl.export.detectron2 import pixel_statistics
from densessl.export.torchvision_format import resnet_backbone, torchvision_state_dict

PREFIX = "backbone."
_FPN_IN_CHANNELS = {"resnet18": [64, 128, 256, 512], "resnet34": [64, 128, 256, 512]}


def config_lines(path: Path, arch: str) -> str:
    """The mmdet (3.x) config fragment that goes with the file."""
    mean, std = pixel_statistics()
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
)"""


def write(modules: dict[str, nn.Module], out: Path) -> ExportResult:
    """Write the backbone under ``backbone.`` keys in an MMEngine checkpoint container."""
    backbone = resnet_backbone(modules)
    weights = torchvision_state_dict(backbone)
    state_dict = {PREFIX + k: v for k, v in weights.items()}
    meta = {"author": "densessl", "arch": backbone.arch, "layout": "torchvision ResNet names"}
    atomic_save({"state_dict": state_dict, "meta": meta}, out)
    return ExportResult(out, config_lines(out, backbone.arch), len(state_dict))
