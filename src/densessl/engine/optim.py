"""Optimizers: SGD, LARS and AdamW over two parameter groups (decayed / not decayed).

Norm weights and biases are the 1-D parameters; with ``decay_norm_and_bias=False`` they get no
weight decay and, under LARS, no trust-ratio adaptation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from densessl.config import OptimConfig


def parameter_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], decay_norm_and_bias: bool
) -> list[dict]:
    decayed, exempt = [], []
    for _, p in named_params:
        if not p.requires_grad:
            continue
        (exempt if p.ndim <= 1 and not decay_norm_and_bias else decayed).append(p)
    groups = [{"params": decayed, "apply_decay": True}]
    if exempt:
        groups.append({"params": exempt, "apply_decay": False})
    return groups


# The two update rules, named by what distinguishes them (the method docstrings say whose is whose).
LARS_VARIANTS = ("trust_on_update", "lr_in_buffer")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), in one of the
    two forms the references use.

    ``variant="trust_on_update"``: for a parameter w with gradient g,
    u = g + wd·w; if the group adapts, u ← u · η·‖w‖/‖u‖; then the momentum buffer
    b ← μ·b + u and w ← w − lr·b.

    ``variant="lr_in_buffer"`` (OpenSelfSup's ``LARS``): the trust ratio is
    t = η·‖w‖/(‖g‖ + wd·‖w‖) and the learning rate enters the buffer:
    b ← μ·b + lr·t·(g + wd·w), w ← w − b. With a varying lr the two differ beyond the trust
    ratio: a past step keeps the lr it was taken with.

    The trust ratio is 1 where a norm it divides by (or ‖w‖) is zero. Groups with
    ``apply_decay=False`` skip decay and adaptation (t = 1). The first step starts the buffer at
    the first update, as ``torch.optim.SGD``. ``foreach`` uses multi-tensor kernels (same values).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        variant: str = "trust_on_update",
        foreach: bool = True,
    ) -> None:
        if variant not in LARS_VARIANTS:
            raise ValueError(f"unknown LARS variant {variant!r}; known: {', '.join(LARS_VARIANTS)}")
        self.variant = variant
        self.foreach = foreach
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            if not with_grad:
                continue
            if self.foreach:
                self._step_group_foreach(group, with_grad)
            else:
                for p in with_grad:
                    self._step_one(group, p)
        return loss

    def _step_one(self, group: dict, p: torch.Tensor) -> None:
        """The update of one parameter, written out (the reference form of the rule)."""
        update = p.grad
        if group.get("apply_decay", True):
            wd = group["weight_decay"]
            w_norm = torch.linalg.vector_norm(p)
            if self.variant == "trust_on_update":
                update = update.add(p, alpha=wd)
                divisor = torch.linalg.vector_norm(update)
            else:  # lr_in_buffer: the decay's norm is added, not the decayed gradient's
                divisor = torch.linalg.vector_norm(update) + wd * w_norm
                update = update.add(p, alpha=wd)
            ok = (w_norm > 0) & (divisor > 0)
            update = update * torch.where(ok, group["eta"] * w_norm / divisor, 1.0)
        # trust_on_update: lr scales the buffer; lr_in_buffer: lr scales each update buffered.
        lr_in_buffer = self.variant == "lr_in_buffer"
        if lr_in_buffer:
            update = update * group["lr"]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.clone(update).detach()
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(update)
        p.add_(state["momentum_buffer"], alpha=-1.0 if lr_in_buffer else -group["lr"])

    def _step_group_foreach(self, group: dict, params: list[torch.Tensor]) -> None:
        """:meth:`_step_one` for every parameter of a group at once, with multi-tensor kernels
        (one kernel per operation instead of one per parameter: hundreds fewer launches)."""
        grads = [p.grad for p in params]
        lr_in_buffer = self.variant == "lr_in_buffer"
        if group.get("apply_decay", True):
            wd = group["weight_decay"]
            w_norms = torch.stack(torch._foreach_norm(params))  # (n,)
            updates = torch._foreach_add(grads, params, alpha=wd)
            if self.variant == "trust_on_update":
                divisors = torch.stack(torch._foreach_norm(updates))
            else:
                divisors = torch.stack(torch._foreach_norm(grads)) + wd * w_norms
            ok = (w_norms > 0) & (divisors > 0)
            trust = torch.where(ok, group["eta"] * w_norms / divisors, 1.0)  # (n,)
            if lr_in_buffer:
                trust = trust * group["lr"]
            torch._foreach_mul_(updates, list(trust.unbind()))
        elif lr_in_buffer:
            updates = torch._foreach_mul(grads, group["lr"])
        else:
            updates = grads
        buffers, fresh = [], []
        for p, update in zip(params, updates, strict=True):
            state = self.state[p]
            if "momentum_buffer" in state:
                buffers.append((state["momentum_buffer"], update))
            else:  # the first step starts the buffer at the update, as torch.optim.SGD
                fresh.append((p, update))
        for p, update in fresh:
            self.state[p]["momentum_buffer"] = torch.clone(update).detach()
        if buffers:
            old = [b for b, _ in buffers]
            torch._foreach_mul_(old, group["momentum"])
            torch._foreach_add_(old, [u for _, u in buffers])
        all_buffers = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_add_(params, all_buffers, alpha=-1.0 if lr_in_buffer else -group["lr"])


@torch.no_grad()
def clip_each_parameter_(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to norm at most ``max_norm`` on its own
    (``g *= max_norm / (‖g‖ + 1e-6)`` when that factor is below 1), not one global norm."""
    for p in parameters:
        if p.grad is None:
            continue
        scale = max_norm / (torch.linalg.vector_norm(p.grad) + 1e-6)
        p.grad.mul_(scale.clamp(max=1.0))


# torch fuses SGD and AdamW on CPU as well as CUDA from 2.4 on.
FUSED_ON_CPU_AND_CUDA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


def implementation_flags(name: str) -> dict[str, bool]:
    """torch's optimizer keyword for ``optim.implementation``: ``auto`` is the fused kernel
    (one kernel for the whole update) where this torch has it, else ``foreach``."""
    if name == "fused" or (name == "auto" and FUSED_ON_CPU_AND_CUDA):
        return {"fused": True}
    return {"foreach": name in ("auto", "foreach")}


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """Build the optimizer (the engine's schedule sets learning rates every step).
    ``cfg.implementation``: torch's fused, foreach or per-parameter update (same rule); our LARS
    uses its foreach form for ``auto``, ``fused`` and ``foreach``."""
    groups = parameter_groups(named_params, cfg.decay_norm_and_bias)
    for g in groups:
        g["weight_decay"] = cfg.weight_decay if g["apply_decay"] else 0.0
    flags = implementation_flags(cfg.implementation)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum, **flags)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.base_lr, momentum=cfg.momentum, eta=cfg.lars_eta,
                    variant=cfg.lars_variant, foreach=cfg.implementation != "loop")  # fmt: skip
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.base_lr, betas=tuple(cfg.betas), **flags)
    raise ValueError(f"unknown optimizer {cfg.name!r}")
