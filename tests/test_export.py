"""Exported backbones load into torchvision exactly as promised."""

from __future__ import annotations

import pytest
import torch
import torchvision

from densessl.cli import main
from densessl.engine.checkpoint import load_checkpoint

from conftest import tiny_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(out, steps=2)]) == 0
    return out


@pytest.mark.parametrize("network,prefix", [(None, "student"), ("teacher", "teacher")])
def test_torchvision_export_loads_with_only_fc_missing(run_dir, tmp_path, network, prefix):
    out = tmp_path / "r18.pt"
    args = ["export", str(run_dir), "--format", "torchvision", "--out", str(out)]
    assert main(args + (["--network", network] if network else [])) == 0
    weights = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    result = model.load_state_dict(weights, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"}
    assert result.unexpected_keys == []
    trained = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    for key, value in weights.items():
        assert torch.equal(value, trained[f"{prefix}.backbone.{key}"]), key


def test_export_of_missing_run_is_a_clear_error(tmp_path, capsys):
    code = main(["export", str(tmp_path / "nope"), "--format", "torchvision", "--out", "x.pt"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err
