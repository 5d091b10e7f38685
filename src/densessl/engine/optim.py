"""Optimizers: SGD, LARS and AdamW over two parameter groups (decayed / not decayed).

Norm weights and biases are the 1-D parameters; with ``decay_norm_and_bias=False`` they get no
weight decay and, under LARS, no trust-ratio adaptation (BYOL / SoCo convention).
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


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), in one of the
    two forms the references use.

    ``variant="byol"`` (BYOL's and SoCo's recipes): for a parameter w with gradient g,
    u = g + wd·w; if the group adapts, u ← u · η·‖w‖/‖u‖; then the momentum buffer
    b ← μ·b + u and w ← w − lr·b.

    ``variant="openselfsup"`` (MCL's reference, OpenSelfSup's ``LARS``): the trust ratio is
    t = η·‖w‖/(‖g‖ + wd·‖w‖) and the learning rate enters the buffer:
    b ← μ·b + lr·t·(g + wd·w), w ← w − b. With a varying lr the two differ beyond the trust
    ratio: a past step keeps the lr it was taken with.

    The trust ratio is 1 where a norm it divides by (or ‖w‖) is zero. Groups with
    ``apply_decay=False`` skip both the decay and the adaptation (t = 1). The first step
    starts the buffer at the first update, as ``torch.optim.SGD``.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        variant: str = "byol",
    ) -> None:
        if variant not in ("byol", "openselfsup"):
            raise ValueError(f"unknown LARS variant {variant!r}; known: byol, openselfsup")
        self.variant = variant
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            adapt = group.get("apply_decay", True)
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if adapt:
                    wd = group["weight_decay"]
                    w_norm = torch.linalg.vector_norm(p)
                    if self.variant == "byol":
                        update = update.add(p, alpha=wd)
                        divisor = torch.linalg.vector_norm(update)
                    else:  # openselfsup: the decay's norm is added, not the decayed gradient's
                        divisor = torch.linalg.vector_norm(update) + wd * w_norm
                        update = update.add(p, alpha=wd)
                    ok = (w_norm > 0) & (divisor > 0)
                    update = update * torch.where(ok, group["eta"] * w_norm / divisor, 1.0)
                # byol: lr scales the buffer; openselfsup: lr scales each update buffered.
                lr_in_buffer = self.variant == "openselfsup"
                if lr_in_buffer:
                    update = update * group["lr"]
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-1.0 if lr_in_buffer else -group["lr"])
        return loss


@torch.no_grad()
def clip_each_parameter_(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """DINO's clipping: scale each parameter's gradient to norm at most ``max_norm`` on its own
    (``g *= max_norm / (‖g‖ + 1e-6)`` when that factor is below 1), not one global norm."""
    for p in parameters:
        if p.grad is None:
            continue
        scale = max_norm / (torch.linalg.vector_norm(p.grad) + 1e-6)
        p.grad.mul_(scale.clamp(max=1.0))


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """Build the optimizer; learning rates are set every step by the engine's schedule."""
    groups = parameter_groups(named_params, cfg.decay_norm_and_bias)
    for g in groups:
        g["weight_decay"] = cfg.weight_decay if g["apply_decay"] else 0.0
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.base_lr, momentum=cfg.momentum, eta=cfg.lars_eta,
                    variant=cfg.lars_variant)  # fmt: skip
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.base_lr, betas=tuple(cfg.betas))
    raise ValueError(f"unknown optimizer {cfg.name!r}")
