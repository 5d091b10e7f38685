"""MoCo-v2 and DenseCL, one step at a time: losses, teacher, queues."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from densessl.config import build_config
from densessl.data.batch import collate_views
from densessl.data.batch_augment import augment_batch
from densessl.data.pretrain import MultiViewDataset
from densessl.data.synthetic import SyntheticScenes
from densessl.data.views import MultiViewTransform
from densessl.methods import build_method, get_method

from conftest import state_at, tiny_overrides
from reference.plain_losses import plain_densecl_dense_loss
from tiny_methods import perturb_student


def make(method: str, tmp_path, **extra):
    cfg = build_config(get_method(method), overrides=tiny_overrides(tmp_path, **extra))
    torch.manual_seed(0)
    return build_method(cfg)


def make_batch(method, n: int = 4, size: int = 64):
    dataset = MultiViewDataset(
        SyntheticScenes(num_images=n, image_size=size), MultiViewTransform(method.view_specs()), 0
    )
    return augment_batch(collate_views([dataset[(0, i)] for i in range(n)]))


def teacher_keys(method, images):
    """The keys the reference computes: key encoder forward, no gradient, L2-normalised."""
    teacher = copy.deepcopy(method.teacher)
    with torch.no_grad():
        c5 = teacher.backbone(images)["c5"]
        k = F.normalize(teacher.global_head(c5.mean(dim=(2, 3))), dim=1)
        dense = teacher.dense_head(c5) if hasattr(teacher, "dense_head") else None
    pooled = None if dense is None else F.normalize(dense.mean(dim=(2, 3)), dim=1)
    return k, pooled


def test_densecl_with_lambda_zero_is_mocov2(tmp_path):
    densecl = make("densecl", tmp_path, **{"method.dense_weight": 0.0})
    moco = make("mocov2", tmp_path)
    result = moco.load_state_dict(densecl.state_dict(), strict=False)
    assert result.missing_keys == []  # MoCo-v2 is exactly DenseCL minus the dense parts
    assert all("dense" in k for k in result.unexpected_keys)
    perturb_student(densecl)
    moco.load_state_dict(densecl.state_dict(), strict=False)
    batch = make_batch(densecl)
    out_dense, out_moco = densecl(batch, state_at(densecl, 0)), moco(batch, state_at(moco, 0))
    assert out_dense.loss.item() == pytest.approx(out_moco.loss.item(), rel=0, abs=1e-6)
    assert out_dense.loss.item() == pytest.approx(out_dense.logs["loss_global"].item(), abs=1e-7)


def test_densecl_loss_is_lambda_mix_of_terms(tmp_path):
    method = make("densecl", tmp_path, **{"method.dense_weight": 0.3})
    out = method(make_batch(method), state_at(method, 0))
    expected = 0.7 * out.logs["loss_global"] + 0.3 * out.logs["loss_dense"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_dense_warmup_switches_lambda(tmp_path):
    method = make("densecl", tmp_path, **{"method.dense_warmup_steps": 2})
    batch = make_batch(method)
    early = method(batch, state_at(method, 1))
    late = method(batch, state_at(method, 2))
    assert early.loss.item() == pytest.approx(early.logs["loss_global"].item(), abs=1e-6)
    mix = 0.5 * (late.logs["loss_global"] + late.logs["loss_dense"])
    assert late.loss.item() == pytest.approx(mix.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["mocov2", "densecl"])
def test_queue_holds_teacher_keys_after_step(name, tmp_path):
    method = make(name, tmp_path)
    perturb_student(method)  # so that keys from the student would be detectably wrong
    batch = make_batch(method)
    queue_before = method.queue.keys.clone()
    expected_k, expected_pooled = teacher_keys(method, batch.views[1])
    method(batch, state_at(method, 0))
    method.after_step(state_at(method, 0))
    b = batch.size
    torch.testing.assert_close(method.queue.keys[:b], expected_k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.queue.keys[b:], queue_before[b:])  # the rest untouched
    assert int(method.queue.ptr) == b
    if name == "densecl":
        torch.testing.assert_close(
            method.dense_queue.keys[:b], expected_pooled, atol=1e-5, rtol=1e-5
        )
        assert int(method.dense_queue.ptr) == b


def test_student_keys_would_differ(tmp_path):
    """Guards the check above: after perturbation the student gives other keys."""
    method = make("mocov2", tmp_path)
    perturb_student(method)
    images = make_batch(method).views[1]
    k_teacher, _ = teacher_keys(method, images)
    with torch.no_grad():
        k_student = method.encode(method.student, images)["global"]
    assert (k_teacher - k_student).abs().max() > 1e-3


@pytest.mark.parametrize("momentum,expect", [(1.0, "teacher"), (0.0, "student")])
def test_momentum_update_semantics(momentum, expect, tmp_path):
    method = make("densecl", tmp_path, **{"method.momentum": momentum})
    perturb_student(method)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    method(make_batch(method), state_at(method, 0))
    method.after_step(state_at(method, 0))
    pairs = zip(method.teacher.named_parameters(), method.student.parameters(), strict=True)
    for (name, t), s in pairs:
        want = teacher_before[name] if expect == "teacher" else s
        assert torch.equal(t, want), name


def test_only_student_gets_gradients(tmp_path):
    method = make("densecl", tmp_path)
    method(make_batch(method), state_at(method, 0)).loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
    assert method.queue.keys.grad is None


def test_grid_size_other_than_map_size(tmp_path):
    method = make("densecl", tmp_path, **{"method.grid_size": 2, "data.image_size": 128})
    out = method(make_batch(method, size=128), state_at(method, 0))  # C5 is 4x4, the grid 2x2
    assert torch.isfinite(out.loss)


def test_dense_term_matches_on_backbone_features(tmp_path):
    """The dense term pairs each student location with the teacher location whose C5 feature
    (not projection) is most similar, with the dense queue as negatives (paper Eq. 2, ref code)."""
    method = make("densecl", tmp_path, **{"data.image_size": 128})  # C5 is 4x4: 16 locations
    perturb_student(method)
    batch = make_batch(method, n=2, size=128)
    teacher = copy.deepcopy(method.teacher)
    with torch.no_grad():
        q_c5 = method.student.backbone(batch.views[0])["c5"]
        q_dense = F.normalize(method.student.dense_head(q_c5), dim=1)
        k_c5 = teacher.backbone(batch.views[1])["c5"]
        k_dense = F.normalize(teacher.dense_head(k_c5), dim=1)
    as_rows = lambda t: t.flatten(2).transpose(1, 2).double()  # noqa: E731  (B, C, h, w) -> (B, N, C)
    expected = plain_densecl_dense_loss(
        as_rows(q_dense), as_rows(k_dense), as_rows(q_c5), as_rows(k_c5),
        method.dense_queue.keys.double(), 0.2,
    )  # fmt: skip
    got = method(batch, state_at(method, 0)).logs["loss_dense"].item()
    assert got == pytest.approx(float(expected), rel=1e-4)
