"""The contract between a method and the engine, and the teacher-student base every method uses.

A method is an ``nn.Module`` that owns its networks (student, teacher), heads, queues and loss
wiring, with its paper defaults in a ``Config`` dataclass. It never touches devices, DDP,
optimizers or time: it *declares* its schedules (:meth:`Method.schedules`), the engine evaluates
them once per optimizer step and passes the values as a :class:`StepState` to
``forward(batch, state)`` for every micro-batch and to ``after_step(state)`` once after the
optimizer step (EMA and queue updates live there, so gradient accumulation sees one consistent
teacher and queue per step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from densessl.config import TrainConfig
from densessl.data.batch import Batch
from densessl.data.views import MultiViewTransform, ViewSpec
from densessl.models.ema import ema_update_
from densessl.models.precision import at_least_float32
from densessl.schedules import RunLength, Schedule


@dataclass
class LossOutput:
    """The loss to backpropagate and named scalar terms to log (detached)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    """Run facts a method may need at construction; all plain values, none of them time."""

    backbone: str
    image_size: int
    batch_norm: str = "shuffle"  # shuffle | sync | local
    seed: int = 0
    keys_per_step: int = 0  # images per forward over all processes (batch / accumulation)


@dataclass(frozen=True)
class StepState:
    """The values of one optimizer step: ``step`` (from 0) and every declared schedule evaluated
    there, by the name it was declared under (the engine's ``lr`` and ``weight_decay``, the
    method's own names), read as attributes: ``state.teacher_momentum``.

    The engine knows no method's value by name; reading a name nobody declared is a bug and
    fails loudly, naming what was declared.
    """

    step: int
    values: Mapping[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        declared = ", ".join(sorted(values)) or "none"
        raise AttributeError(f"no schedule named {name!r} was declared (declared: {declared})")


class Method(nn.Module):
    """Base class of every pretraining method (see the module docstring)."""

    Config: ClassVar[type]  # the method's own settings, defaults = the paper's
    run_defaults: ClassVar[TrainConfig] = TrainConfig()  # engine settings of the paper's run
    export_network: ClassVar[str] = "online"  # which network the authors released
    needs_proposals: ClassVar[bool] = False  # the transform takes each image's object proposals

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx

    def schedules(self) -> dict[str, Schedule]:
        """The time-dependent values this method reads, by :class:`StepState` field name."""
        return {}

    def schedule_formulas(self, step: int, run: RunLength) -> dict[str, float]:
        """Each declared schedule's value at ``step`` written out as the paper's formula, plain
        arithmetic with no :mod:`densessl.schedules` object: the contract test holds
        :meth:`schedules` to it, so every declared name needs its formula here."""
        return {}

    def view_specs(self) -> list[ViewSpec]:
        raise NotImplementedError

    def make_transform(self) -> Any:
        """The data-layer transform that makes this method's views (built from plain numbers):
        by default one independent view per :meth:`view_specs` entry. Methods whose views share
        more than an image (SoCo's boxes) return their own; with ``needs_proposals`` it is
        called as ``transform(image, generator, proposals)``."""
        return MultiViewTransform(self.view_specs())

    def forward(self, batch: Batch, state: StepState) -> LossOutput:  # type: ignore[override]
        raise NotImplementedError

    def after_step(self, state: StepState) -> None:
        """Called once after every optimizer step."""

    def after_step_aborted(self) -> None:
        """Called instead of :meth:`after_step` when a step is abandoned (NaN, interrupt):
        drop whatever the step's forward passes left pending (keys waiting for the queue)."""

    def teacher_distribution(self, images: torch.Tensor, state: StepState) -> torch.Tensor | None:
        """For a method whose teacher outputs a distribution, its target for each of ``images``
        (N, K), which the run's health checks read (:mod:`densessl.health`); None otherwise."""
        return None

    def frozen_parameters(self, state: StepState) -> list[nn.Parameter]:
        """Parameters the engine must not update at this step: their gradients are dropped
        (set to None, so the optimizer skips them entirely, weight decay included) after the
        backward pass."""
        return []

    def exportable(self, network: str | None = None) -> dict[str, nn.Module]:
        """The modules that go downstream, by role (``{"backbone": ...}``)."""
        raise NotImplementedError


class TeacherStudent(Method):
    """A student trained by the optimizer and a teacher that follows it by EMA.

    Subclasses build ``self.student`` and ``self.teacher`` (a frozen copy, see
    :func:`densessl.models.ema.make_teacher`) and declare a ``teacher_momentum`` schedule; the
    base updates the teacher after every step with the momentum the engine passes, and exports
    the parts named in ``export_roles`` (role -> attribute path in the encoder) of the network
    the authors released.
    """

    student: nn.Module
    teacher: nn.Module
    export_roles: ClassVar[dict[str, str]] = {"backbone": "backbone"}

    @torch.no_grad()
    def after_step(self, state: StepState) -> None:
        ema_update_(self.teacher, self.student, state.teacher_momentum)

    def network(self, name: str | None = None) -> nn.Module:
        """The student (``"online"``) or the teacher (``"teacher"``); default: the released one."""
        return self.teacher if (name or self.export_network) == "teacher" else self.student

    def exportable(self, network: str | None = None) -> dict[str, nn.Module]:
        encoder = self.network(network)
        return {role: encoder.get_submodule(path) for role, path in self.export_roles.items()}


def keep_in_graph(loss: torch.Tensor, unused: Iterable[torch.Tensor]) -> torch.Tensor:
    """``loss`` plus zero times outputs that feed nothing this step (a pyramid level no box was
    assigned to). DDP needs every parameter in the graph; their gradient is exactly zero, as it
    would be without them."""
    return loss + 0.0 * sum(at_least_float32(t).mean() for t in unused)
