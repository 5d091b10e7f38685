"""The contract between a method and the engine, and the teacher-student base every method uses.

A method is an ``nn.Module`` owning networks, heads, queues and loss, paper defaults in a
``Config``; it never touches devices, DDP, optimizers or time. The engine evaluates its
:meth:`Method.schedules` once per optimizer step and passes a :class:`StepState` to every
micro-batch's ``forward(batch, state)`` and to ``after_step(state)``, so gradient accumulation
sees one teacher and queue.
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
from densessl.schedules import RunLength, Schedule, byol_momentum, cosine_to_one


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
    """One optimizer step's values: ``step`` (from 0) and every declared schedule there, read
    as attributes (``state.teacher_momentum``); an undeclared name fails loudly."""

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
        """Each declared schedule's value at ``step`` as the paper's formula in plain arithmetic;
        the contract test holds :meth:`schedules` to it."""
        return {}

    def view_specs(self) -> list[ViewSpec]:
        raise NotImplementedError

    def make_transform(self) -> Any:
        """The data transform making this method's views: by default one view per
        :meth:`view_specs` entry; with ``needs_proposals``, ``transform(image, generator,
        proposals)``."""
        return MultiViewTransform(self.view_specs())

    def forward(self, batch: Batch, state: StepState) -> LossOutput:  # type: ignore[override]
        raise NotImplementedError

    def after_step(self, state: StepState) -> None:
        """Called once after every optimizer step."""

    def after_step_aborted(self) -> None:
        """Called instead of :meth:`after_step` when a step is abandoned (NaN, interrupt):
        drop whatever the step left pending (keys waiting for the queue)."""

    def teacher_distribution(self, images: torch.Tensor, state: StepState) -> torch.Tensor | None:
        """The teacher's target distribution (N, K) for ``images``, read by the health checks;
        None for methods without one."""
        return None

    def projections(self, images: torch.Tensor) -> torch.Tensor | None:
        """The teacher's (M, D) embeddings the loss compares, rows images or pixels, read by the
        health checks (a projector can collapse while the released backbone does not); None
        for methods that do not declare them."""
        return None

    def frozen_parameters(self, state: StepState) -> list[nn.Parameter]:
        """Parameters not to update at this step: their gradients are set to None after the
        backward, so the optimizer skips them, weight decay included."""
        return []

    def exportable(self, network: str | None = None) -> dict[str, nn.Module]:
        """The modules that go downstream, by role (``{"backbone": ...}``)."""
        raise NotImplementedError


class TeacherStudent(Method):
    """A student trained by the optimizer and a teacher that follows it by EMA.

    Subclasses build ``self.student``, ``self.teacher`` (:func:`densessl.models.ema.make_teacher`)
    and a ``teacher_momentum`` schedule; the base updates the teacher after every step and exports
    ``export_roles`` (role -> attribute path) of the released network.
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


class CosineMomentumTeacher(TeacherStudent):
    """A teacher-student whose teacher follows BYOL's momentum rule from ``cfg.momentum``:
    τ(k) = 1 − (1 − τ_base)·(cos(π·k/K) + 1)/2, rising to 1 over the run's K steps. The update
    after step k prepares the target of step k + 1, so it uses τ(k + 1). BYOL, SoCo, MCL and
    PixPro share it."""

    def schedules(self) -> dict[str, Schedule]:
        return {"teacher_momentum": byol_momentum(self.cfg.momentum)}

    def schedule_formulas(self, step: int, run: RunLength) -> dict[str, float]:
        return {"teacher_momentum": cosine_to_one(self.cfg.momentum, step + 1, run.total_steps)}


def keep_in_graph(loss: torch.Tensor, unused: Iterable[torch.Tensor]) -> torch.Tensor:
    """``loss`` plus zero times outputs that feed nothing this step, since DDP needs every
    parameter in the graph; their gradient is exactly zero."""
    return loss + 0.0 * sum(at_least_float32(t).mean() for t in unused)
