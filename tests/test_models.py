"""densessl.models: backbones, heads, EMA, negative queue, global batch norm."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torchvision
from torch import nn

from densessl.models import (
    DenseHead,
    GlobalBatchNorm2d,
    MLPHead,
    NegativeQueue,
    ResNetBackbone,
    build_backbone,
    convert_batchnorm,
    ema_update_,
    make_teacher,
)
from densessl.registry import BACKBONES

from conftest import free_port

# ---------------------------------------------------------------- backbones

EXPECTED_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


@pytest.mark.parametrize("arch", sorted(EXPECTED_CHANNELS))
def test_backbone_output_shapes_and_strides(arch):
    torch.manual_seed(0)
    backbone = build_backbone(arch)
    assert isinstance(backbone, ResNetBackbone)
    assert backbone.arch == arch
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for (name, tensor), channels, stride in zip(
        features.items(), EXPECTED_CHANNELS[arch], (4, 8, 16, 32), strict=True
    ):
        assert tensor.shape == (1, channels, 64 // stride, 64 // stride), name
        assert backbone.out_channels[name] == channels


def test_all_resnets_are_registered():
    assert {"resnet18", "resnet34", "resnet50", "resnet101"} <= set(BACKBONES.names())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_backbone_state_dict_is_torchvision_without_fc(arch):
    ours = build_backbone(arch).state_dict()
    reference = getattr(torchvision.models, arch)(weights=None).state_dict()
    assert list(ours) == [key for key in reference if key not in ("fc.weight", "fc.bias")]
    for key, value in ours.items():
        assert value.shape == reference[key].shape, key

    target = getattr(torchvision.models, arch)(weights=None)
    result = target.load_state_dict(ours, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"}
    assert result.unexpected_keys == []
    assert torch.equal(target.conv1.weight, ours["conv1.weight"])


def test_backbone_rejects_unknown_names():
    with pytest.raises(ValueError):
        ResNetBackbone("resnet7")
    with pytest.raises(KeyError):
        build_backbone("vgg16")


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_head_shapes_and_init(batch_norm):
    torch.manual_seed(0)
    head = MLPHead(256, 512, 32, batch_norm=batch_norm)
    assert head(torch.randn(4, 256)).shape == (4, 32)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2
    assert any(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == batch_norm
    first = linears[0]
    assert torch.count_nonzero(first.bias) == 0
    # Kaiming normal, fan_in = 256, relu gain: std sqrt(2/256) (131072 samples).
    assert first.weight.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.02)


def test_dense_head_is_pointwise_mlp():
    torch.manual_seed(0)
    head = DenseHead(8, 16, 4).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    y = head(x)
    assert y.shape == (2, 4, 3, 5)
    # 1x1 convs == the same MLP applied to every location's channel vector.
    first, second = head.mlp[0], head.mlp[2]
    vector = x[1, :, 2, 4]
    hidden = torch.relu(first.weight[:, :, 0, 0] @ vector + first.bias)
    expected = second.weight[:, :, 0, 0] @ hidden + second.bias
    torch.testing.assert_close(y[1, :, 2, 4], expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- EMA


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def perturbed_student(teacher: nn.Module) -> nn.Module:
    student = make_teacher(teacher)  # same structure; then move every parameter and buffer
    student.requires_grad_(True)
    with torch.no_grad():
        for tensor in [*student.parameters(), *student.buffers()]:
            tensor.add_(torch.randn_like(tensor.float()).to(tensor.dtype) + 1)
    return student


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_make_teacher_is_frozen_independent_copy():
    student = small_net()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for (name, t), s in zip(
        teacher.state_dict().items(), student.state_dict().values(), strict=True
    ):
        assert torch.equal(t, s), name
        assert t.data_ptr() != s.data_ptr(), name


@pytest.mark.parametrize("momentum", [1.0, 0.0, 0.9])
def test_ema_update_formula_on_parameters_only(momentum):
    torch.manual_seed(0)
    teacher = make_teacher(small_net())
    student = perturbed_student(teacher)
    before = snapshot(teacher)
    ema_update_(teacher, student, momentum)
    student_state = student.state_dict()
    parameter_names = {name for name, _ in teacher.named_parameters()}
    for name, value in teacher.state_dict().items():
        if name in parameter_names:
            expected = momentum * before[name] + (1 - momentum) * student_state[name]
            if momentum == 0.0:
                assert torch.equal(value, student_state[name]), name
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        else:  # BN running stats and counter: the teacher's own
            assert torch.equal(value, before[name]), name
    assert all(not p.requires_grad for p in teacher.parameters())


# ---------------------------------------------------------------- queue


def test_queue_init_is_unit_rows_and_persistent():
    queue = NegativeQueue(7, 5)
    assert queue.keys.shape == (7, 5)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(7))
    assert set(queue.state_dict()) == {"keys", "ptr"}
    assert queue.ptr.dtype == torch.long and int(queue.ptr) == 0


def test_queue_enqueue_wraps_around():
    queue = NegativeQueue(5, 2)
    rows = torch.arange(12, dtype=torch.float32).view(6, 2)  # a..f
    original = queue.keys.clone()
    queue.enqueue(rows[:3])  # a, b, c -> slots 0, 1, 2
    assert int(queue.ptr) == 3
    torch.testing.assert_close(queue.keys[3:], original[3:], rtol=0, atol=0)
    queue.enqueue(rows[3:])  # d, e, f -> slots 3, 4, 0 (3 does not divide 5)
    assert int(queue.ptr) == 1
    expected = torch.stack([rows[5], rows[1], rows[2], rows[3], rows[4]])
    torch.testing.assert_close(queue.keys, expected, rtol=0, atol=0)
    queue.enqueue(rows[:5])  # a full turn: a..e land in slots 1, 2, 3, 4, 0
    assert int(queue.ptr) == 1
    expected = torch.stack([rows[4], rows[0], rows[1], rows[2], rows[3]])
    torch.testing.assert_close(queue.keys, expected, rtol=0, atol=0)
    with pytest.raises(ValueError):
        queue.enqueue(torch.zeros(6, 2))


def test_queue_negatives_is_detached_and_guarded_against_early_enqueue():
    queue = NegativeQueue(4, 3)
    negatives = queue.negatives()
    assert not negatives.requires_grad
    q = torch.randn(2, 3, requires_grad=True)
    loss = (q @ negatives.t()).exp().sum()  # exp saves its output, matmul saves negatives
    queue.enqueue(torch.zeros(2, 3))  # too early: before backward
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_queue_state_dict_round_trip():
    source = NegativeQueue(6, 3)
    source.enqueue(torch.ones(4, 3))
    target = NegativeQueue(6, 3)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.keys, source.keys)
    assert int(target.ptr) == 4
    target.enqueue(torch.full((3, 3), 2.0))  # continues where the source stopped
    assert int(target.ptr) == 1
    assert torch.all(target.keys[[4, 5, 0]] == 2.0)


# ---------------------------------------------------------------- batch norm


def paired_batch_norms(momentum: float | None) -> tuple[nn.BatchNorm2d, GlobalBatchNorm2d]:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3, momentum=momentum).double()
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    ours = GlobalBatchNorm2d(3, momentum=momentum).double()
    ours.load_state_dict(plain.state_dict())
    return plain, ours


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batch_norm_equals_batch_norm_in_one_process(momentum):
    plain, ours = paired_batch_norms(momentum)
    for step in range(3):
        x = (torch.randn(4, 3, 5, 6, dtype=torch.float64) * (step + 1) + step).requires_grad_()
        x_ours = x.detach().clone().requires_grad_()
        upstream = torch.randn(4, 3, 5, 6, dtype=torch.float64)
        y, y_ours = plain(x), ours(x_ours)
        torch.testing.assert_close(y_ours, y, rtol=0, atol=1e-6)
        (y * upstream).sum().backward()
        (y_ours * upstream).sum().backward()
        torch.testing.assert_close(x_ours.grad, x.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.bias.grad, plain.bias.grad, rtol=0, atol=1e-6)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=1e-10)

    plain.eval(), ours.eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=1e-10)


def test_global_batch_norm_refuses_single_value_per_channel():
    with pytest.raises(ValueError):
        GlobalBatchNorm2d(2)(torch.randn(1, 2, 1, 1))


def test_convert_batchnorm_sync_keeps_state_and_output():
    torch.manual_seed(0)
    original = ResNetBackbone("resnet18").double()
    converted = convert_batchnorm(make_teacher(original), "sync")
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert isinstance(converted.bn1, GlobalBatchNorm2d)
    assert isinstance(converted.layer3[1].bn2, GlobalBatchNorm2d)
    reference_state = original.state_dict()
    assert list(converted.state_dict()) == list(reference_state)
    for name, value in converted.state_dict().items():
        assert torch.equal(value, reference_state[name]), name
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(converted(x)["c5"], original(x)["c5"], rtol=0, atol=1e-8)


def test_convert_batchnorm_other_modes():
    model = small_net()
    assert convert_batchnorm(model, "bn") is model
    assert isinstance(model[1], nn.BatchNorm1d)
    synced = convert_batchnorm(small_net(), "torch_sync")
    assert isinstance(synced[1], nn.SyncBatchNorm)
    with pytest.raises(ValueError):
        convert_batchnorm(model, "group")


def _global_bn_worker(rank: int, port: int, out_dir: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x, upstream, state = torch.load(os.path.join(out_dir, "inputs.pt"))
        norm = GlobalBatchNorm2d(3).double()
        norm.load_state_dict(state)
        local = x.chunk(2)[rank].clone().requires_grad_()
        y = norm(local)
        (y * upstream.chunk(2)[rank]).sum().backward()
        result = (y.detach(), local.grad, norm.weight.grad, norm.state_dict())
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.mark.dist
def test_global_batch_norm_two_processes_equal_full_batch(tmp_path):
    # Two ranks each holding half the batch must reproduce BatchNorm2d on the whole batch:
    # outputs, input gradients, summed weight gradients and running statistics.
    plain, _ = paired_batch_norms(0.1)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
    upstream = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    torch.save((x, upstream, plain.state_dict()), tmp_path / "inputs.pt")
    mp.spawn(_global_bn_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)

    x_full = x.clone().requires_grad_()
    y_full = plain(x_full)
    (y_full * upstream).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([r[0] for r in ranks]), y_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]), x_full.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(ranks[0][2] + ranks[1][2], plain.weight.grad, rtol=0, atol=1e-10)
    for name, value in plain.state_dict().items():
        for rank_result in ranks:
            torch.testing.assert_close(rank_result[3][name], value, rtol=0, atol=1e-10)
