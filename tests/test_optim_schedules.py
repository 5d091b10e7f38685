"""The optimizers and the schedules the engine builds, against hand-written updates and closed
forms: LARS with its parameter groups (1-D parameters excluded from decay and adaptation),
AdamW, the lr (linear scaling rule, warm-up, cosine or constant) and weight-decay schedules."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from densessl.config import OptimConfig
from densessl.engine.optim import build_optimizer
from densessl.engine.setup import optim_schedules
from densessl.schedules import RunLength

LR, WD, MOMENTUM, ETA = 0.5, 0.1, 0.9, 0.001


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # weight 2-D; bias, BN 1-D


def set_grads(net: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=generator)


@pytest.mark.parametrize("implementation", ["loop", "foreach"])
def test_lars_two_steps_equal_the_hand_written_update(implementation):
    net = tiny_net()
    cfg = OptimConfig(name="lars", base_lr=LR, weight_decay=WD, momentum=MOMENTUM,
                      lars_eta=ETA, decay_norm_and_bias=False,
                      implementation=implementation)  # fmt: skip
    optimizer = build_optimizer(net.named_parameters(), cfg)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    w, buffers = dict(start), {}
    for seed in (1, 2):
        set_grads(net, seed)
        for name, p in net.named_parameters():
            g = p.grad.clone()
            if p.ndim > 1:  # decayed and adapted: u = η‖w‖/‖g + wd·w‖ · (g + wd·w)
                u = g + WD * w[name]
                u = u * ETA * w[name].norm() / u.norm()
            else:  # biases and norms: plain SGD with momentum
                u = g
            buffers[name] = u if name not in buffers else MOMENTUM * buffers[name] + u
            w[name] = w[name] - LR * buffers[name]
        optimizer.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), w[name], rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(w["0.weight"], start["0.weight"])


@pytest.mark.parametrize("implementation", ["loop", "foreach", "fused"])
def test_sgd_two_steps_equal_the_hand_written_update(implementation):
    # torch's SGD as the engine builds it (every parameter decayed, as DenseCL's reference):
    # d = g + wd·w; buf = d at the first step, else μ·buf + d; w -= lr·buf.
    net = tiny_net()
    cfg = OptimConfig(name="sgd", base_lr=LR, weight_decay=WD, momentum=MOMENTUM,
                      implementation=implementation)  # fmt: skip
    optimizer = build_optimizer(net.named_parameters(), cfg)
    w, buffers = {n: p.detach().clone().double() for n, p in net.named_parameters()}, {}
    for seed in (1, 2):
        set_grads(net, seed)
        for name, p in net.named_parameters():
            d = p.grad.double() + WD * w[name]
            buffers[name] = d if name not in buffers else MOMENTUM * buffers[name] + d
            w[name] = w[name] - LR * buffers[name]
        optimizer.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach().double(), w[name], rtol=1e-6, atol=1e-7)


def test_auto_implementation_is_fused_sgd_and_adamw_and_foreach_lars():
    net = tiny_net()
    built = {name: build_optimizer(net.named_parameters(), OptimConfig(name=name))
             for name in ("sgd", "adamw", "lars")}  # fmt: skip
    assert built["sgd"].defaults["fused"] and built["adamw"].defaults["fused"]
    assert built["lars"].foreach


@pytest.mark.parametrize("implementation", ["loop", "foreach", "fused"])
def test_adamw_one_step_equals_the_hand_written_update(implementation):
    net = tiny_net()
    cfg = OptimConfig(name="adamw", base_lr=LR, weight_decay=WD, decay_norm_and_bias=False,
                      implementation=implementation)  # fmt: skip
    optimizer = build_optimizer(net.named_parameters(), cfg)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    set_grads(net, 1)
    optimizer.step()
    for name, p in net.named_parameters():
        g, wd = p.grad, (WD if p.ndim > 1 else 0.0)
        # Step 1: m̂ = g, v̂ = g² after bias correction; decoupled decay lr·wd·w.
        expected = start[name] * (1 - LR * wd) - LR * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)


def run_cfg(**optim):
    return OmegaConf.create({"batch_size": 512, "optim": {**vars(OptimConfig()), **optim}})


@pytest.mark.parametrize("step", [0, 1, 4, 5, 12, 19])
def test_cosine_lr_with_warmup_and_the_linear_scaling_rule(step):
    cfg = run_cfg(base_lr=0.3, min_lr=0.01, warmup_epochs=1.0, schedule="cosine")
    run = RunLength(total_steps=20, steps_per_epoch=5)
    lr = optim_schedules(cfg, run.steps_per_epoch)["lr"].at(step, run)
    peak = 0.3 * 512 / 256  # lr = base_lr · batch / 256
    if step < 5:
        expected = peak * (step + 1) / 5
    else:
        expected = 0.01 + (peak - 0.01) * (1 + math.cos(math.pi * (step - 5) / 15)) / 2
    assert lr == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("step", [0, 2, 3, 10])
def test_constant_lr_with_warmup(step):
    cfg = run_cfg(base_lr=0.1, warmup_steps=3, schedule="constant")
    run = RunLength(total_steps=20, steps_per_epoch=5)
    lr = optim_schedules(cfg, run.steps_per_epoch)["lr"].at(step, run)
    assert lr == pytest.approx(0.2 * min(1, (step + 1) / 3), rel=1e-12)


@pytest.mark.parametrize("step", [0, 7, 19])
def test_weight_decay_cosine(step):
    cfg = run_cfg(weight_decay=0.04, weight_decay_end=0.4)
    run = RunLength(total_steps=20, steps_per_epoch=5)
    wd = optim_schedules(cfg, run.steps_per_epoch)["weight_decay"].at(step, run)
    expected = 0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * step / 20)) / 2
    assert wd == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("implementation", ["loop", "foreach"])
def test_openselfsup_lars_two_steps_equal_the_hand_written_update(implementation):
    # OpenSelfSup's LARS (MCL's reference): local_lr = η‖w‖/(‖g‖ + wd‖w‖) for adapted
    # parameters, 1 for excluded ones; d = lr·local_lr·(g + wd·w); buf = d at the first step,
    # else μ·buf + d; w -= buf. The lr changes between the steps, so buffering lr·d instead of d
    # (then w -= lr·buf) would differ.
    net = tiny_net()
    cfg = OptimConfig(name="lars", base_lr=LR, weight_decay=WD, momentum=MOMENTUM, lars_eta=ETA,
                      decay_norm_and_bias=False, lars_variant="lr_in_buffer",
                      implementation=implementation)  # fmt: skip
    optimizer = build_optimizer(net.named_parameters(), cfg)
    w, buffers = {n: p.detach().clone().double() for n, p in net.named_parameters()}, {}
    for seed, lr in ((1, 0.5), (2, 0.05)):
        set_grads(net, seed)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for name, p in net.named_parameters():
            g = p.grad.double()
            if p.ndim > 1:
                local_lr = ETA * w[name].norm() / (g.norm() + WD * w[name].norm())
                d = lr * local_lr * (g + WD * w[name])
            else:
                d = lr * g
            buffers[name] = d if name not in buffers else MOMENTUM * buffers[name] + d
            w[name] = w[name] - buffers[name]
        optimizer.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach().double(), w[name], rtol=1e-5, atol=1e-7,
                                       msg=name)  # fmt: skip


@pytest.mark.parametrize("step", [0, 1, 3, 4, 5, 12, 19])
def test_mmcv_cosine_times_linear_warmup(step):
    # mmcv LrUpdaterHook (MCL's lr_config): regular lr = annealing_cos(base, min_lr, k/K) over
    # the whole run; during warm-up lr = regular · (1 − (1 − k/W)·(1 − warmup_ratio)).
    cfg = run_cfg(base_lr=0.3, min_lr=0.01, warmup_steps=5, warmup_ratio=1e-4,
                  schedule="cosine_times_warmup")  # fmt: skip
    run = RunLength(total_steps=20, steps_per_epoch=5)
    lr = optim_schedules(cfg, run.steps_per_epoch)["lr"].at(step, run)
    peak = 0.3 * 512 / 256
    regular = 0.01 + 0.5 * (peak - 0.01) * (math.cos(math.pi * step / 20) + 1)
    if step < 5:
        regular *= 1 - (1 - step / 5) * (1 - 1e-4)
    assert lr == pytest.approx(regular, rel=1e-12)
    if step == 0:
        assert lr == pytest.approx(peak * 1e-4, rel=1e-12)


@pytest.mark.parametrize(("former", "name"), [("byol", "trust_on_update"),
                                              ("openselfsup", "lr_in_buffer")])  # fmt: skip
def test_a_run_config_with_a_former_lars_variant_name_still_builds(former, name, tmp_path):
    """Run folders written before the variants were named by their rule hold the old names;
    resuming them must give the same optimizer."""
    from densessl.config import build_config
    from densessl.methods import get_method

    cfg = build_config(get_method("byol"), overrides=[f"optim.lars_variant={former}"])
    assert cfg.optim.lars_variant == name
