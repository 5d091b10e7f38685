"""The engine's speed settings change how a step computes, not what: channels_last and
torch.compile against the plain eager, contiguous step (float tolerance), and pinned,
non-blocking host-to-device transfers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from densessl.config import build_config
from densessl.data.batch import Batch
from densessl.engine.fast_path import (
    apply_memory_format,
    batch_in_memory_format,
    compile_networks,
    resolve_memory_format,
)
from densessl.engine.setup import build_loader, build_source
from densessl.methods import get_method
from densessl.registry import METHODS

from conftest import state_at, tiny_overrides
from tiny_methods import is_vit, tiny_batch, tiny_method


def loss_and_grads(method, batch, state):
    out = method(batch, state)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in method.named_parameters()
                               if p.grad is not None}  # fmt: skip


def assert_grads_close(got: dict, want: dict, tolerance: float) -> None:
    """Per tensor, ‖got − want‖ ≤ tolerance · ‖want‖ + 1e-5 · ‖all gradients‖: float rounding
    of another summation order (NHWC kernels, fused graphs) passes, a changed computation does
    not. The floor covers the biases right before a batch norm, whose true gradient is zero and
    whose computed one is rounding noise."""
    assert got.keys() == want.keys()
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in want.values()]))
    for key, grad in want.items():
        error = torch.linalg.vector_norm(got[key] - grad)
        bound = tolerance * torch.linalg.vector_norm(grad) + 1e-5 * total
        assert error <= bound, (key, float(error), float(bound))


def first_conv(method) -> nn.Conv2d:
    return next(m for m in method.student.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not is_vit(n)])
def test_a_channels_last_step_equals_the_contiguous_one(name, tmp_path):
    method, cfg = tiny_method(name, tmp_path)
    batch = tiny_batch(method, cfg)
    nhwc = copy.deepcopy(method)
    apply_memory_format(nhwc, torch.channels_last)
    seen = []
    first_conv(nhwc).register_forward_hook(lambda m, i, o: seen.append(o))
    assert first_conv(nhwc).weight.is_contiguous(memory_format=torch.channels_last)
    assert not first_conv(method).weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)  # MCL draws its montage placement in forward
    loss, grads = loss_and_grads(method, batch, state_at(method, 0))
    torch.manual_seed(5)
    nhwc_batch = batch_in_memory_format(batch, torch.channels_last)
    loss_nhwc, grads_nhwc = loss_and_grads(nhwc, nhwc_batch, state_at(nhwc, 0))
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # the convs really ran NHWC
    torch.testing.assert_close(loss_nhwc, loss, rtol=1e-5, atol=1e-6)
    # 1e-2: a conv's weight gradient before a batch norm sums terms that nearly cancel, which
    # turns the NHWC kernels' 1e-5 rounding into up to 3e-3 on some CPUs (MCL's tiny montages);
    # a changed computation is off by order 1
    assert_grads_close(grads_nhwc, grads, 1e-2)


def test_auto_memory_format_is_channels_last_for_cnns_only(tmp_path):
    def resolved(**extra):
        overrides = [f"{k}={v}" for k, v in {"out": tmp_path, **extra}.items()]
        return resolve_memory_format(build_config(get_method("densecl"), overrides=overrides))

    assert resolved(backbone="resnet18") == torch.channels_last
    assert resolved(backbone="vit_test_patch8") == torch.contiguous_format
    assert resolved(backbone="resnet18", memory_format="contiguous") == torch.contiguous_format
    assert resolved(backbone="vit_test_patch8", memory_format="channels_last") == (
        torch.channels_last
    )


@pytest.mark.slow
def test_a_compiled_step_equals_the_eager_one(tmp_path):
    # aot_eager: dynamo's graph capture and AOT autograd, as inductor gets them, without
    # inductor's C++ code generation (minutes on 2 cores); test_gpu.py compiles with inductor.
    method, cfg = tiny_method("densecl", tmp_path)
    batch = tiny_batch(method, cfg)
    compiled = copy.deepcopy(method)
    names = compile_networks(compiled, backend="aot_eager")
    assert "student.backbone" in names and "teacher.backbone" in names
    assert compiled.state_dict().keys() == method.state_dict().keys()  # checkpoints unchanged
    loss, grads = loss_and_grads(method, batch, state_at(method, 0))
    loss_compiled, grads_compiled = loss_and_grads(compiled, batch, state_at(compiled, 0))
    torch.testing.assert_close(loss_compiled, loss, rtol=1e-4, atol=1e-5)
    assert_grads_close(grads_compiled, grads, 1e-3)


def test_batches_are_pinned_for_a_cuda_device_and_every_tensor_is_pinned(tmp_path, monkeypatch):
    cfg = build_config(get_method("densecl"), overrides=tiny_overrides(tmp_path))
    method, _ = tiny_method("densecl", tmp_path)
    source = build_source(cfg)
    assert build_loader(cfg, source, method, torch.device("cuda"), 0).pin_memory
    assert not build_loader(cfg, source, method, torch.device("cpu"), 0).pin_memory
    pinned = []

    def fake_pin(tensor):  # no CUDA here: record what would be pinned
        pinned.append(tensor)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = tiny_batch(method, cfg)
    batch = Batch(**{**batch.__dict__, "extras": {"boxes": torch.zeros(4, 2)}})
    batch.pin_memory()
    expected = [*batch.views, batch.crop_boxes, batch.flipped, batch.source_sizes,
                batch.photometric, batch.index, batch.extras["boxes"]]  # fmt: skip
    assert len(pinned) == len(expected)
    assert all(any(p is e for p in pinned) for e in expected)
