"""DINO: its loss and centring against plain references, one CPU step, teacher and schedules."""

from __future__ import annotations

import math

import pytest
import torch

from densessl.engine.optim import clip_each_parameter_
from densessl.losses import cross_view_loss, dino_loss
from densessl.methods.dino import same_size_runs
from densessl.schedules import Constant, Cosine, RunLength

from conftest import augmented_batch, state_at, tiny_vit_method
from reference.plain_dino import plain_dino_loss, plain_multicrop_loss

make, make_batch = tiny_vit_method, augmented_batch


@pytest.mark.parametrize("rows,dim", [(1, 3), (5, 16), (8, 64)])
@pytest.mark.parametrize("temps", [(0.1, 0.04), (0.2, 0.07), (1.0, 1.0)])
def test_dino_loss_matches_plain_loop(rows, dim, temps):
    g = torch.Generator().manual_seed(rows * dim)
    s, t = torch.randn(rows, dim, generator=g), 3 * torch.randn(rows, dim, generator=g)
    center = torch.randn(1, dim, generator=g)
    got = dino_loss(s.double(), t.double(), center.double(), *temps)
    assert got.item() == pytest.approx(plain_dino_loss(s, t, center, *temps), rel=1e-10)


def test_dino_loss_closed_forms():
    # A uniform target (constant teacher logits) against a uniform student: log K.
    k = 32
    ones = torch.ones(4, k)
    assert dino_loss(ones, 5 * ones, torch.zeros(k)).item() == pytest.approx(math.log(k), 1e-6)
    # Centring removes a constant shift of the teacher; sharpening towards the argmax.
    s, t = torch.randn(4, k), torch.randn(4, k)
    shifted = dino_loss(s, t + 3.0, torch.full((k,), 3.0))
    assert shifted.item() == pytest.approx(dino_loss(s, t, torch.zeros(k)).item(), rel=1e-6)
    one_hot_limit = dino_loss(s, t, torch.zeros(k), 0.1, 1e-4)
    expected = -torch.log_softmax(s / 0.1, 1).gather(1, t.argmax(1, keepdim=True)).mean()
    assert one_hot_limit.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dino_loss_gives_no_gradient_to_teacher():
    s, t = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)
    dino_loss(s, t, torch.zeros(8)).backward()
    assert s.grad is not None and t.grad is None


def test_cross_view_loss_pairs_like_dino():
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 10, generator=g, dtype=torch.float64) for _ in range(5)]
    teacher = [torch.randn(3, 10, generator=g, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(1, 10, generator=g, dtype=torch.float64)
    got = cross_view_loss(student, teacher, center, 0.1, 0.05).item()
    assert got == pytest.approx(plain_multicrop_loss(student, teacher, center, 0.1, 0.05))


def test_views_are_two_global_then_local_and_grouped_by_size(tmp_path):
    method = make("dino", tmp_path)
    sizes = [spec.output_size for spec in method.view_specs()]
    assert sizes == [(48, 48)] * 2 + [(24, 24)] * 2
    assert [s.photometric.solarize_p for s in method.view_specs()] == [0, 0.2, 0, 0]
    views = make_batch(method).views
    assert same_size_runs(views) == [[0, 1], [2, 3]]


def test_step_updates_only_the_student_and_teacher_follows_by_ema(tmp_path):
    method = make("dino", tmp_path)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    out = method(make_batch(method), state_at(method, 0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.student.backbone.cls_token.grad.abs().sum() > 0
    with torch.no_grad():  # a stand-in optimizer step
        for p in method.student.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    # Backward and the optimizer never touched the teacher; only after_step moves it.
    assert all(
        torch.equal(a, b) for a, b in zip(teacher_before, method.teacher.parameters(), strict=True)
    )
    m = state_at(method, 0).teacher_momentum
    assert m == pytest.approx(0.996)
    method.after_step(state_at(method, 0))
    for old, new, s in zip(
        teacher_before, method.teacher.parameters(), method.student.parameters(), strict=True
    ):
        torch.testing.assert_close(new, m * old + (1 - m) * s.detach())


def test_teacher_is_used_on_global_views_and_centre_follows_its_mean(tmp_path):
    method = make("dino", tmp_path)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = make_batch(method)
    method(batch, state_at(method, 0))
    with torch.no_grad():  # the teacher's logits, computed here view by view
        logits = [method.teacher.head(method.teacher.backbone(v)["cls"]) for v in batch.views[:2]]
    expected = 0.1 * torch.cat(logits).mean(dim=0, keepdim=True)  # 0.9 · 0 + 0.1 · mean
    method.after_step(state_at(method, 0))
    torch.testing.assert_close(method.center, expected, rtol=1e-4, atol=1e-6)


def test_loss_uses_centre_and_scheduled_temperature(tmp_path):
    # No stochastic depth, so the student gives the same logits twice.
    overrides = {"method.warmup_teacher_temp_epochs": 1, "method.teacher_temp": 0.07,
                 "method.drop_path_rate": 0.0}  # fmt: skip
    method = make("dino", tmp_path, **overrides)
    batch = make_batch(method)
    method.center.normal_()
    with torch.no_grad():
        teacher = method.image_logits(method.teacher, batch.views[:2])
        student = method.image_logits(method.student, batch.views)
        out = method(batch, state_at(method, 2))
    temp = 0.04 + (0.07 - 0.04) * 2 / 4  # half-way through a 4-step warm-up epoch
    assert out.logs["teacher_temp"].item() == pytest.approx(temp)
    expected = plain_multicrop_loss(student, teacher, method.center, 0.1, temp)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_schedules_momentum_temperature_and_frozen_last_layer(tmp_path):
    method = make("dino", tmp_path)  # state_at: a 10-step run, 4 steps per epoch
    assert state_at(method, 10).teacher_momentum == pytest.approx(1.0)
    assert state_at(method, 5).teacher_momentum == pytest.approx(1 - 0.004 * 0.5)
    # The vanilla run: τ_t constant 0.04; the boosted run warms it up to 0.07.
    assert state_at(method, 0).teacher_temp == pytest.approx(0.04)
    assert state_at(method, 10**6).teacher_temp == pytest.approx(0.04)
    boosted = make("dino", tmp_path, **{"method.teacher_temp": 0.07,
                                        "method.warmup_teacher_temp_epochs": 30})  # fmt: skip
    assert state_at(boosted, 0).teacher_temp == pytest.approx(0.04)
    assert state_at(boosted, 10**6).teacher_temp == pytest.approx(0.07)
    # The gain is fixed (norm_last_layer), never trained.
    frozen = method.frozen_parameters(state_at(method, 3))
    assert [id(p) for p in frozen] == [id(method.student.head.last_layer.weight)]
    assert method.frozen_parameters(state_at(method, 4)) == []


def test_weight_decay_schedule_and_per_parameter_clipping():
    run = RunLength(100, 10)
    assert Cosine(0.04, 0.4).at(0, run) == pytest.approx(0.04)
    assert Cosine(0.04, 0.4).at(100, run) == pytest.approx(0.4)
    assert Cosine(0.04, 0.4).at(50, run) == pytest.approx(0.22)
    assert Constant(1e-4).at(50, run) == 1e-4
    small, large = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    small.grad, large.grad = torch.tensor([0.3, 0.0, 0.4]), torch.full((2, 2), 5.0)
    clip_each_parameter_([small, large, torch.nn.Parameter(torch.zeros(1))], 3.0)
    torch.testing.assert_close(small.grad, torch.tensor([0.3, 0.0, 0.4]))  # norm 0.5: untouched
    torch.testing.assert_close(large.grad.norm(), torch.tensor(3.0), rtol=1e-5, atol=0)


def test_dino_refuses_a_resnet(tmp_path):
    from densessl.errors import ConfigError

    with pytest.raises(ConfigError, match="ViT"):
        make("dino", tmp_path, backbone="resnet18")


@pytest.mark.parametrize("method_name", ["dino", "selfpatch"])
def test_head_logits_are_float32_under_bf16_autocast(tmp_path, method_name):
    # Every DINOHead (DINO's, SelfPatch's image and patch heads) must hand float32 logits to the
    # softmaxes, computed from the MLP's output by a float32 last layer: the reference's fp16
    # logits keep 11 significant bits, bf16 only 8 (8x coarser, before a 0.04 sharpening).
    import torch.nn.functional as F

    from densessl.models.heads import DINOHead

    method = tiny_vit_method(method_name, tmp_path, **{"method.drop_path_rate": 0.0})
    batch = augmented_batch(method)
    calls = []
    heads = [m for m in method.modules() if isinstance(m, DINOHead)]
    assert len(heads) == (2 if method_name == "dino" else 4)
    hooks = [h.register_forward_hook(lambda m, i, o: calls.append((m, i[0], o))) for h in heads]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        method(batch, state_at(method, 0))
        hiddens = [m.mlp(x) for m, x, _ in calls]  # the MLP's bf16 output, recomputed
    for hook in hooks:
        hook.remove()
    assert calls
    for (head, _, logits), hidden in zip(calls, hiddens, strict=True):
        assert logits.dtype == torch.float32
        assert hidden.dtype == torch.bfloat16  # the MLP does follow the autocast
        weight = head.last_layer.gain.double() * F.normalize(head.last_layer.weight.double(), dim=1)
        expected = F.linear(F.normalize(hidden.double(), dim=-1), weight)
        torch.testing.assert_close(logits.double(), expected, rtol=0, atol=1e-5)
