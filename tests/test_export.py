"""Every export format loads into its target with exactly the expected key sets.

torchvision and timm are installed, so their files are loaded into the real models. detectron2
and mmdet are not: their files are checked against key sets written out in
``reference/export_layouts.py`` from those libraries' own ResNet layouts, independently of the
renaming code under test.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from densessl.cli import main
from densessl.export import detectron2, mmdet
from densessl.models.backbones import build_backbone
from densessl.runs import load_checkpoint

from conftest import refused, tiny_overrides
from reference.export_layouts import detectron2_resnet_keys, torchvision_trunk_keys


@pytest.fixture(scope="module")
def run_dir(module_tmp_path):
    out = module_tmp_path / "run"
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(out, steps=2)]) == 0
    return out


@pytest.fixture(scope="module")
def trained(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _export(run_dir, tmp_path, fmt, suffix, *extra):
    out = tmp_path / f"export.{suffix}"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


# ---------------------------------------------------------------- torchvision


@pytest.mark.parametrize("network,prefix", [(None, "student"), ("teacher", "teacher")])
def test_torchvision_export_loads_with_only_fc_missing(run_dir, trained, tmp_path, network, prefix):
    out = _export(run_dir, tmp_path, "torchvision", "pt", *(["--network", network] * bool(network)))
    weights = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    result = model.load_state_dict(weights, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"}
    assert result.unexpected_keys == []
    for key, value in weights.items():
        assert torch.equal(value, trained[f"{prefix}.backbone.{key}"]), key


def test_torchvision_export_loads_into_detection_trunks(run_dir, tmp_path):
    weights = torch.load(_export(run_dir, tmp_path, "torchvision", "pt"), weights_only=True)
    for norm_layer in (torch.nn.BatchNorm2d, FrozenBatchNorm2d):
        fpn = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=norm_layer)
        result = fpn.body.load_state_dict(weights, strict=True)  # raises on any mismatch
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(fpn.body.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])


def test_cli_prints_how_to_load(run_dir, tmp_path, capsys):
    out = _export(run_dir, tmp_path, "torchvision", "pt")
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "torchvision.models.resnet18()" in printed
    assert "weights_backbone=None" in printed  # the printed snippet must not download


# ---------------------------------------------------------------- timm


def test_timm_export_loads_into_timm(run_dir, trained, tmp_path):
    timm = pytest.importorskip("timm")
    out = _export(run_dir, tmp_path, "timm", "pth")
    weights = torch.load(out, weights_only=True)
    headless = timm.create_model("resnet18", num_classes=0)
    result = headless.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with_head = timm.create_model("resnet18")
    result = with_head.load_state_dict(weights, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    # The route the printed instructions give: timm's own loader, from the local file only.
    model = timm.create_model(
        "resnet18", pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(out)}
    )
    assert torch.equal(model.conv1.weight, trained["student.backbone.conv1.weight"])


# ---------------------------------------------------------------- safetensors


def test_safetensors_export_loads_into_torchvision(run_dir, trained, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = safetensors_torch.load_file(str(_export(run_dir, tmp_path, "safetensors", "st")))
    result = torchvision.models.resnet18().load_state_dict(weights, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    assert torch.equal(weights["layer2.0.bn1.running_mean"],
                       trained["student.backbone.layer2.0.bn1.running_mean"])  # fmt: skip


# ---------------------------------------------------------------- detectron2


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_detectron2_keys_follow_the_renaming_rules(tmp_path, arch):
    backbone = build_backbone(arch)
    result = detectron2.write({"backbone": backbone}, tmp_path / "d2.pkl")
    with open(result.path, "rb") as f:
        document = pickle.load(f)
    assert document["__author__"] == "densessl" and document["matching_heuristics"] is True
    model = document["model"]
    assert set(model) == detectron2_resnet_keys(arch)
    assert all(isinstance(v, np.ndarray) for v in model.values())
    source = backbone.state_dict()
    pairs = {  # hand-written examples of each rule
        "stem.conv1.weight": "conv1.weight",
        "stem.conv1.norm.running_var": "bn1.running_var",
        "res2.0.conv1.norm.bias": "layer1.0.bn1.bias",
        "res3.0.shortcut.weight": "layer2.0.downsample.0.weight",
        "res5.0.shortcut.norm.running_mean": "layer4.0.downsample.1.running_mean",
        "res5.1.conv2.weight": "layer4.1.conv2.weight",
    }
    for d2_key, tv_key in pairs.items():
        np.testing.assert_array_equal(model[d2_key], source[tv_key].numpy())


def test_detectron2_cli_prints_the_config_it_needs(run_dir, tmp_path, capsys):
    out = _export(run_dir, tmp_path, "detectron2", "pkl")
    printed = capsys.readouterr().out
    for line in (
        f'WEIGHTS: "{out}"',
        "PIXEL_MEAN: [123.675, 116.28, 103.53]",
        "PIXEL_STD: [58.395, 57.12, 57.375]",
        'FORMAT: "RGB"',
        "STRIDE_IN_1X1: False",
        'NORM: "SyncBN"',
        "FREEZE_AT: 0",
        "DEPTH: 18",
        "RES2_OUT_CHANNELS: 64",
    ):
        assert line in printed, line


# ---------------------------------------------------------------- mmdet


def test_mmdet_checkpoint_has_backbone_keys(run_dir, trained, tmp_path, capsys):
    out = _export(run_dir, tmp_path, "mmdet", "pth")
    checkpoint = torch.load(out, weights_only=True)
    state_dict = checkpoint["state_dict"]
    # mmdet's ResNet(style="pytorch") has torchvision's trunk names, under the model's backbone.
    assert set(state_dict) == {f"backbone.{k}" for k in torchvision_trunk_keys("resnet18")}
    assert checkpoint["meta"]["arch"] == "resnet18"
    assert torch.equal(state_dict["backbone.layer3.1.bn2.weight"],
                       trained["student.backbone.layer3.1.bn2.weight"])  # fmt: skip
    printed = capsys.readouterr().out
    assert f'init_cfg=dict(type="Pretrained", checkpoint="{out}", prefix="backbone.")' in printed
    assert 'style="pytorch"' in printed and "frozen_stages=-1" in printed
    assert "bgr_to_rgb=True" in printed and "in_channels=[64, 128, 256, 512]" in printed
    assert mmdet.PREFIX == "backbone."


# ---------------------------------------------------------------- errors


def test_export_of_missing_run_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["export", str(tmp_path / "nope"), "--format", "torchvision", "--out", "x.pt"]
    assert "no checkpoint" in refused(capsys, argv, tmp_path)
