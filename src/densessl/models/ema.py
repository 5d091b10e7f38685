"""Momentum (EMA) teacher: a frozen copy of the student updated by exponential averaging."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with every parameter frozen (``requires_grad=False``)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: ``teacher_param = m * teacher_param + (1 - m) * student_param``, m in [0, 1].

    Parameters only: buffers (BN statistics) evolve from the teacher's own forwards, as in MoCo
    and DenseCL. ``teacher`` must match ``student``'s parameter list (names, order, shapes).
    """
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student have different numbers of parameters")
    if momentum == 0.0:
        # Exact copy (m*x + 0*y can differ from y by rounding, and inf/nan in the teacher leak).
        torch._foreach_copy_(teacher_params, student_params)
        return
    # One fused multi-tensor kernel instead of a Python loop over hundreds of tensors.
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
