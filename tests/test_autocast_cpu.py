"""Mixed precision without a GPU: one step of every method under bf16 autocast on the CPU.

The engine runs forward passes under autocast; the GPU tests cover fp16/bf16 only where CUDA is
present. Here every method's forward runs in bf16 on the CPU (checked: its student's first layer
really computes in bf16), its loss must come out in float32 (every loss promises float32 at
least) and finite, its gradients finite and not all zero, and the queues and centres that
``after_step`` fills from the bf16 teacher outputs finite too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densessl.registry import METHODS

from conftest import state_at
from tiny_methods import tiny_batch, tiny_method


def first_layer(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))


@pytest.mark.parametrize("name", METHODS.names())
def test_one_bf16_autocast_step_on_cpu_is_finite(name, tmp_path):
    method, cfg = tiny_method(name, tmp_path)
    batch = tiny_batch(method, cfg)
    state = state_at(method, 0)
    dtypes = []
    first_layer(method.student).register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(batch, state)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(torch.isfinite(v).all() for v in out.logs.values())
    out.loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    method.after_step(state)
    for key, value in method.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
