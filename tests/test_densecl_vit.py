"""DenseCL on a ViT (an extension, not the paper): the patch tokens are the dense map, the
class token the global vector; one CPU step, and its export loads into timm, both on a tiny
test ViT and on the real ViT-tiny/16 architecture (random init, 64 px, batch 2), whose export
loads strictly into ``timm.create_model("vit_tiny_patch16_224", num_classes=0)``."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from densessl.cli import main
from densessl.models.vit import patch_tokens
from densessl.runs import open_run

from conftest import state_at
from tiny_methods import tiny_batch, tiny_method

VIT = {"backbone": "vit_test_patch8", "data.image_size": 48, "data.synthetic_size": 64}
VIT_TINY = {"backbone": "vit_tiny_patch16", "data.image_size": 64, "data.synthetic_size": 64}


def timm_vit_tiny(backbone) -> torch.nn.Module:
    """timm's own registered ViT-tiny/16 (no download), the model a user loads the export into."""
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)


def rebuilt_from_kwargs(backbone) -> torch.nn.Module:
    """The test ViT has no timm registry name: rebuilt from the arguments the export prints."""
    return VisionTransformer(**backbone.timm_kwargs)


# (overrides, batch size, the timm model the export must load into strictly)
VITS = {
    "vit_test_patch8": (VIT, 4, rebuilt_from_kwargs),
    "vit_tiny_patch16": (VIT_TINY, 2, timm_vit_tiny),
}


def test_patch_tokens_are_the_dense_map_and_the_class_token_the_global_one(tmp_path):
    method, _ = tiny_method("densecl", tmp_path, **VIT)
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        got = method.encode(method.student, images)
        tokens = method.student.backbone.forward_features(images)  # (B, 1 + 36, D), timm's own
        net = method.student
        dense = net.dense_head(tokens[:, 1:].transpose(1, 2).reshape(2, -1, 6, 6))
        expected_global = F.normalize(net.global_head(tokens[:, 0]), dim=1)
    torch.testing.assert_close(got["global"], expected_global)
    torch.testing.assert_close(got["dense"], F.normalize(patch_tokens(dense), dim=2))
    torch.testing.assert_close(got["feat"], tokens[:, 1:])  # matching on the raw patch tokens


@pytest.mark.parametrize("arch", VITS)
def test_one_cpu_step(arch, tmp_path):
    method, cfg = tiny_method("densecl", tmp_path, **VITS[arch][0])
    out = method(tiny_batch(method, cfg, n=2), state_at(method, 0))
    assert torch.isfinite(out.loss) and out.logs["loss_dense"] > 0
    out.loss.backward()
    grad = method.student.backbone.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("arch", VITS)
def test_its_export_loads_into_timm(arch, tmp_path, capsys):
    overrides, batch, timm_model = VITS[arch]
    run = tmp_path / "run"
    values = {**overrides, "out": run, "steps": 1, "batch_size": batch,
              "data.synthetic_images": 2 * batch, "data.workers": 0, "method.queue_size": 16,
              "method.dim": 16, "method.hidden_dim": 32}  # fmt: skip
    args = ["pretrain", "--method", "densecl", *(f"{k}={v}" for k, v in values.items())]
    assert main(args) == 0
    out = tmp_path / "vit.pt"
    assert main(["export", str(run), "--format", "timm", "--out", str(out)]) == 0
    backbone = open_run(run)[0].student.backbone.eval()
    model = timm_model(backbone).eval()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    # At the position table's own grid neither model resamples it (timm resamples with
    # antialias, densessl as DINO without; docs/deviations.md).
    x = torch.randn(1, 3, *backbone.patch_embed.img_size)
    with torch.no_grad():
        tokens = backbone.forward_features(x)
        torch.testing.assert_close(model.forward_features(x), tokens)
    assert torch.isfinite(tokens).all()
    if timm_model is timm_vit_tiny:  # the printed lines name the registry model
        assert 'timm.create_model("vit_tiny_patch16_224"' in capsys.readouterr().out
