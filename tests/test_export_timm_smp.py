"""``--format timm`` for timm CNN backbones and ``--format smp``: each file loads strictly into
its real target (timm's full model; smp's encoders), and the target then computes the
backbone's own pyramid, so a wrong name, a dropped tensor or a wrong stage shows.
"""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from densessl.cli import main
from densessl.eval.weights import load_backbone
from densessl.export.smp import write_smp
from densessl.export.torchvision_format import write_timm
from densessl.models import build_backbone

from conftest import refused, tiny_overrides
from tiny_timm import TINY_TIMM, tiny_timm_name

X = torch.randn(2, 3, 64, 64)


def trained_like(name: str) -> torch.nn.Module:
    """A backbone whose every tensor is away from any init (weights and BN statistics), so a
    tensor the export failed to carry over shows in the outputs."""
    torch.manual_seed(0)
    backbone = build_backbone(name)
    with torch.no_grad():
        for key, value in backbone.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif value.is_floating_point():
                value.add_(0.05 * torch.randn_like(value))
    return backbone.eval()


def pyramid(backbone) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = backbone(X)
    assert all(torch.isfinite(v).all() for v in out.values())  # else comparisons prove nothing
    return out


@pytest.mark.parametrize("timm_name", TINY_TIMM)
def test_timm_export_loads_strictly_into_timm_create_model(timm_name, tmp_path):
    backbone = trained_like(tiny_timm_name(timm_name))
    result = write_timm({"backbone": backbone}, tmp_path / "timm.pt")
    model = timm.create_model(timm_name, num_classes=0, **TINY_TIMM[timm_name]).eval()
    model.load_state_dict(torch.load(result.path, weights_only=True), strict=True)
    with torch.no_grad():
        stages = model.forward_intermediates(X, intermediates_only=True)
    torch.testing.assert_close(stages[-1], pyramid(backbone)["c5"])
    assert f'timm.create_model("{timm_name}"' in result.instructions


@pytest.mark.parametrize("timm_name", TINY_TIMM)
def test_smp_export_of_a_timm_backbone_loads_into_a_tu_encoder(timm_name, tmp_path):
    backbone = trained_like(tiny_timm_name(timm_name))
    result = write_smp({"backbone": backbone}, tmp_path / "smp.pt")
    unet = smp.Unet(f"tu-{timm_name}", encoder_weights=None, classes=3, **TINY_TIMM[timm_name])
    unet.encoder.load_state_dict(torch.load(result.path, weights_only=True), strict=True)
    with torch.no_grad():
        deepest = unet.eval().encoder(X)[-1]
    torch.testing.assert_close(deepest, pyramid(backbone)["c5"])
    assert f'smp.Unet("tu-{timm_name}"' in result.instructions


@pytest.mark.parametrize("decoder", [smp.Unet, smp.FPN, smp.DeepLabV3Plus])
def test_smp_export_of_a_resnet_loads_into_each_decoders_encoder(decoder, tmp_path):
    backbone = trained_like("resnet18")
    result = write_smp({"backbone": backbone}, tmp_path / "smp.pt")
    model = decoder("resnet18", encoder_weights=None, classes=3).eval()
    model.encoder.load_state_dict(torch.load(result.path, weights_only=True), strict=True)
    if decoder is smp.Unet:  # DeepLabV3+ dilates the last stage: another map, same weights
        with torch.no_grad():
            torch.testing.assert_close(model.encoder(X)[-1], pyramid(backbone)["c5"])


def test_a_timm_backbone_run_exports_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    name = tiny_timm_name("convnext_tiny")
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(run, 1, backbone=name)]) == 0
    for fmt in ("timm", "smp"):
        capsys.readouterr()
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        assert "load_state_dict" in capsys.readouterr().out
    argv = ["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "tv")]
    assert "--format timm or smp" in refused(capsys, argv, tmp_path)


def test_smp_refuses_a_vit_in_one_line(tmp_path):
    from densessl.errors import ExportError

    with pytest.raises(ExportError, match="--format timm"):
        write_smp({"backbone": build_backbone("vit_test_patch8")}, tmp_path / "x.pt")


@pytest.mark.parametrize("writer", [write_timm, write_smp])
def test_the_probes_load_timm_and_smp_exports_back(writer, tmp_path):
    name = tiny_timm_name("convnext_tiny")
    backbone = trained_like(name)
    result = writer({"backbone": backbone}, tmp_path / "export.pt")
    loaded = load_backbone(str(result.path), name)
    torch.testing.assert_close(pyramid(loaded)["c5"], pyramid(backbone)["c5"])
