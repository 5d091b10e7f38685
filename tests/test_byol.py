"""BYOL: the loss against its closed form, one training step, and the EMA-only target."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

from densessl.config import build_config
from densessl.losses import byol_loss
from densessl.methods import build_method, get_method
from densessl.schedules import RunLength

from conftest import assert_target_moves_only_by_ema, augmented_batch, state_at
from reference.plain_byol import plain_byol_loss


def tiny_byol(tmp_path, steps: int = 10, **extra):
    values = {
        "out": str(tmp_path),
        "backbone": "resnet18",
        "batch_size": 4,
        "data.image_size": 64,
        "method.hidden_dim": 32,
        "method.dim": 16,
    }
    values.update(extra)
    cfg = build_config(get_method("byol"), overrides=[f"{k}={v}" for k, v in values.items()])
    torch.manual_seed(0)
    return build_method(cfg)


# ---------------------------------------------------------------- byol_loss


@pytest.mark.parametrize("rows,dim", [(1, 3), (7, 16)])
def test_byol_loss_matches_plain_loop(rows, dim):
    generator = torch.Generator().manual_seed(rows * dim)
    pred = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    target = 3.0 * torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    assert byol_loss(pred, target).item() == pytest.approx(plain_byol_loss(pred, target), rel=1e-12)


def test_byol_loss_closed_forms():
    e = torch.eye(3, dtype=torch.float64)
    assert byol_loss(e, 5 * e).item() == pytest.approx(0.0, abs=1e-12)  # same direction
    assert byol_loss(e, -e).item() == pytest.approx(4.0)  # opposite
    assert byol_loss(e, e.roll(1, dims=0)).item() == pytest.approx(2.0)  # orthogonal


def test_byol_loss_sends_no_gradient_to_the_target():
    pred = torch.randn(4, 8, requires_grad=True)
    target = torch.randn(4, 8, requires_grad=True)
    byol_loss(pred, target).backward()
    assert pred.grad is not None and target.grad is None


# ---------------------------------------------------------------- the method


def test_one_step_loss_is_the_symmetric_byol_loss(tmp_path):
    method = tiny_byol(tmp_path)
    batch = augmented_batch(method)
    first, second = batch.views
    out = method(batch, state_at(method, 0))
    # Recomputed from the parts, in training mode as in the step (BN batch statistics).
    student, predictor, teacher = (copy.deepcopy(m) for m in (method.student, method.predictor,
                                                              method.teacher))  # fmt: skip

    def project(encoder, images):  # backbone, global average pool, projector
        return encoder.projector(encoder.backbone(images)["c5"].mean(dim=(2, 3)))

    with torch.no_grad():
        p1, p2 = predictor(project(student, first)), predictor(project(student, second))
        z1, z2 = project(teacher, first), project(teacher, second)
    expected = plain_byol_loss(p1, z2) + plain_byol_loss(p2, z1)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())


def test_target_only_moves_by_ema(tmp_path):
    method = tiny_byol(tmp_path, steps=10)
    assert_target_moves_only_by_ema(method, augmented_batch(method), 3, 0.99, 10)


def test_momentum_schedule_end_points(tmp_path):
    method = tiny_byol(tmp_path, steps=8, **{"method.momentum": 0.99})
    momentum = method.schedules()["teacher_momentum"]  # read one step ahead
    assert momentum.at(-1, RunLength(8, 1)) == pytest.approx(0.99)
    assert momentum.at(7, RunLength(8, 1)) == pytest.approx(1.0)


def test_defaults_are_the_references_300_epoch_preset(tmp_path):
    # byol/configs/byol.py presets for 300 epochs: lr 0.3, weight decay 1e-6, target EMA 0.99.
    cfg = build_config(get_method("byol"), overrides=[f"out={tmp_path}"])
    assert cfg.epochs == 300 and cfg.optim.name == "lars" and cfg.optim.base_lr == 0.3
    assert cfg.optim.weight_decay == 1e-6 and cfg.optim.decay_norm_and_bias is False
    assert cfg.optim.warmup_epochs == 10 and cfg.method.momentum == 0.99


def test_residual_blocks_start_with_a_zero_last_bn_scale(tmp_path):
    # The reference's haiku ResNet blocks create their last BatchNorm with a zero scale.
    method = tiny_byol(tmp_path)
    for network in (method.student, method.teacher):
        blocks = [m for m in network.backbone.modules() if isinstance(m, BasicBlock)]
        assert len(blocks) == 8  # ResNet-18
        for block in blocks:
            assert torch.equal(block.bn2.weight, torch.zeros_like(block.bn2.weight))
            assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))
    stem = method.student.backbone.bn1.weight
    assert torch.equal(stem, torch.ones_like(stem))


def test_zero_init_residual_off_keeps_torchvisions_unit_scales(tmp_path):
    # The small-data recipe's switch: every BN scale of both networks starts at 1.
    method = tiny_byol(tmp_path, **{"method.zero_init_residual": False})
    for network in (method.student, method.teacher):
        blocks = [m for m in network.backbone.modules() if isinstance(m, BasicBlock)]
        for block in blocks:
            assert torch.equal(block.bn2.weight, torch.ones_like(block.bn2.weight))


def test_projector_and_predictor_end_in_a_bias_free_linear(tmp_path):
    # networks.MLP: Linear(with_bias=True) BN ReLU Linear(with_bias=False).
    method = tiny_byol(tmp_path)
    for mlp in (method.student.projector.mlp, method.predictor.mlp):
        first, last = mlp[0], mlp[-1]
        assert isinstance(last, torch.nn.Linear) and last.bias is None
        assert first.bias is not None
    names = {n for n, _ in method.student.named_parameters()}
    assert "projector.mlp.3.bias" not in names and "projector.mlp.3.weight" in names


def test_projector_and_predictor_shapes(tmp_path):
    method = tiny_byol(tmp_path)
    z = method.project(method.student, torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 16) and method.predictor(z).shape == (2, 16)
    assert F.normalize(z, dim=1).isfinite().all()
