"""The contract between a method and the engine.

A method is an ``nn.Module`` that owns its networks (student, teacher), heads, queues and loss
wiring, with its paper defaults in a ``Config`` dataclass. It never touches devices, DDP or
optimizers: the engine calls ``forward(batch, step)`` for every micro-batch, backpropagates the
returned loss, steps the optimizer, then calls ``after_step(step)`` once per optimizer step
(EMA and queue updates live there, so gradient accumulation sees one consistent teacher and
queue per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from densessl.data.batch import Batch
from densessl.data.views import MultiViewTransform, ViewSpec


@dataclass
class LossOutput:
    """The loss to backpropagate and named scalar terms to log (detached)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    """Run facts a method may need at construction; all plain values."""

    backbone: str
    total_steps: int
    image_size: int
    batch_norm: str = "shuffle"  # shuffle | sync | local
    seed: int = 0
    steps_per_epoch: int = 0  # optimizer steps per pass over the data; 0 when unknown (export)


class Method(nn.Module):
    """Base class of every pretraining method (see the module docstring)."""

    Config: ClassVar[type]
    recipe: ClassVar[dict[str, Any]] = {}  # engine defaults this method's paper changes
    export_network: ClassVar[str] = "online"  # which network the authors released
    needs_proposals: ClassVar[bool] = False  # the transform takes each image's object proposals

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx

    def view_specs(self) -> list[ViewSpec]:
        raise NotImplementedError

    def make_transform(self) -> Any:
        """The data-layer transform that makes this method's views (built from plain numbers):
        by default one independent view per :meth:`view_specs` entry. Methods whose views share
        more than an image (SoCo's boxes) return their own; with ``needs_proposals`` it is
        called as ``transform(image, generator, proposals)``."""
        return MultiViewTransform(self.view_specs())

    def forward(self, batch: Batch, step: int) -> LossOutput:  # type: ignore[override]
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called once after every optimizer step."""

    def frozen_parameters(self, step: int) -> list[nn.Parameter]:
        """Parameters the engine must not update at ``step``: their gradients are dropped
        (set to None, so the optimizer skips them entirely, weight decay included) after the
        backward pass. DINO freezes its last layer during the first epoch this way."""
        return []

    def after_step_aborted(self) -> None:
        """Called instead of :meth:`after_step` when a step is abandoned (NaN, interrupt):
        drop whatever the step's forward passes left pending (keys waiting for the queue)."""

    def exportable(self, network: str | None = None) -> dict[str, nn.Module]:
        """The modules that go downstream, by role (``{"backbone": ...}``)."""
        raise NotImplementedError
