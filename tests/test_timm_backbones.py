"""timm CNN backbones: the C2..C5 pyramid is timm's own, and every CNN method steps on it.

The reference for the pyramid is timm's full model (``timm.create_model(name, num_classes=0)``)
loaded with the backbone's weights under their mapped names and run through its own
``forward_intermediates``: a wrong key map, a wrong stage picked for a level, or a missing map
all show as a failed strict load or different maps.
"""

from __future__ import annotations

import pytest
import timm
import torch

from densessl.cli import main
from densessl.models import build_backbone
from densessl.models.norm import GlobalBatchNormAct2d, convert_batchnorm
from densessl.models.timm_backbone import TimmBackboneError
from densessl.registry import METHODS

from conftest import state_at, tiny_overrides
from tiny_methods import is_vit, tiny_batch, tiny_method
from tiny_timm import TINY_TIMM, tiny_timm_name

CNN_METHODS = [name for name in METHODS.names() if not is_vit(name)]


@pytest.mark.parametrize("timm_name", TINY_TIMM)
def test_pyramid_is_timms_own_stage_outputs(timm_name):
    torch.manual_seed(0)
    backbone = build_backbone(tiny_timm_name(timm_name)).eval()
    full = timm.create_model(timm_name, num_classes=0, **TINY_TIMM[timm_name]).eval()
    result = full.load_state_dict(backbone.timm_state_dict(), strict=False)
    assert not result.unexpected_keys
    # features_only drops only the classifier-side layers (ConvNeXt's head norm,
    # EfficientNet's conv_head/bn2): nothing of the stages may be missing.
    assert all(k.startswith(("head.", "conv_head.", "bn2.")) for k in result.missing_keys)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone(x)
        stages = full.forward_intermediates(x, intermediates_only=True)
    by_stride = {64 // m.shape[-1]: m for m in stages}  # the last map of each stride
    for name, stride in (("c2", 4), ("c3", 8), ("c4", 16), ("c5", 32)):
        assert ours[name].shape[-1] == 64 // stride, name
        assert backbone.out_channels[name] == ours[name].shape[1], name
        torch.testing.assert_close(ours[name], by_stride[stride], msg=name)


@pytest.mark.parametrize("method_name", CNN_METHODS)
@pytest.mark.parametrize("timm_name", TINY_TIMM)
def test_one_cpu_step_of_every_cnn_method(timm_name, method_name, tmp_path):
    method, cfg = tiny_method(method_name, tmp_path, backbone=tiny_timm_name(timm_name))
    out = method(tiny_batch(method, cfg, n=2), state_at(method, 0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    stem = next(method.student.backbone.parameters())  # the first layer: gradient flows through
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    grads = [p.grad for p in method.student.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


def test_a_timm_vit_or_unknown_name_is_a_one_line_error():
    with pytest.raises(TimmBackboneError, match="strides"):
        build_backbone("timm/test_vit")
    with pytest.raises(TimmBackboneError, match="list_models"):
        build_backbone("timm/no_such_model")


def test_eval_detect_refuses_a_timm_backbone_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    name = tiny_timm_name("regnety_002")
    assert main(["pretrain", "--method", "mocov2", *tiny_overrides(run, 1, backbone=name)]) == 0
    capsys.readouterr()
    assert main(["eval", "detect", "--weights", str(run), "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "timm/regnety_002" in err[0]


def test_synchronised_batch_norm_keeps_timms_fused_activations():
    """timm's EfficientNet and RegNet fuse BN + activation (BatchNormAct2d): the conversion for
    multi-process runs must keep the activation. In one process synchronised BN is plain BN, so
    the converted network computes what the original does."""
    torch.manual_seed(0)
    backbone = build_backbone(tiny_timm_name("efficientnet_b0")).train()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)["c5"]
        torch.manual_seed(0)
        converted = convert_batchnorm(build_backbone(tiny_timm_name("efficientnet_b0")), "sync")
        got = converted.train()(x)["c5"]
    assert any(isinstance(m, GlobalBatchNormAct2d) for m in converted.modules())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)  # two-pass variance rounding
