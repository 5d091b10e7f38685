"""One step of the real engine (``open_session`` + ``train_step``) for every registered method:
the optimizer moves the student, and the teacher moves only by the EMA towards the updated
student, θ_t ← m·θ_t + (1 − m)·θ_s with the momentum the method declares for step 0."""

from __future__ import annotations

import pytest
import torch

from densessl.engine.step import step_state
from densessl.registry import METHODS
from densessl.schedules import RunLength

from engine_harness import engine_steps, tiny_config


def parameters(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("name", METHODS.names())
def test_a_step_moves_the_student_and_the_teacher_only_by_ema(name, tmp_path):
    before = {}

    def remember(method):
        with torch.no_grad():  # a student away from its teacher, so that a swapped EMA shows
            for p in method.student.parameters():
                p.add_(0.01 * torch.randn_like(p))
        before["student"], before["teacher"] = (
            parameters(method.student),
            parameters(method.teacher),
        )
        before["momentum"] = step_state(0, method.schedules(), RunLength(2, 2)).teacher_momentum

    # An mmcv warm-up (MCL's) starts at 1e-4 of the lr, too small a step for a float32 norm
    # weight near 1 to change at all; a warm-up factor of 1 keeps the step's mechanics under test
    # (the factor means nothing to the other schedules).
    extra = {"optim.warmup_ratio": 1.0}
    done = engine_steps(tiny_config(name, tmp_path, steps=2, **extra), 1, before=remember)
    student = {k[len("student.") :]: v for k, v in done.state.items() if k.startswith("student.")}
    teacher = {k[len("teacher.") :]: v for k, v in done.state.items() if k.startswith("teacher.")}
    grads = {k[len("student.") :]: g for k, g in done.grads[0].items() if k.startswith("student.")}
    assert grads and any(g.abs().sum() > 0 for g in grads.values())
    # Every student parameter with a gradient moved (a Linear bias before a BN has a gradient
    # that is zero but for rounding, too small to move it).
    largest = max(float(g.norm()) for g in grads.values())
    for key, grad in grads.items():
        if grad.norm() > 1e-4 * largest:
            assert not torch.equal(student[key], before["student"][key]), key
    m = before["momentum"]
    assert 0 < m < 1
    for key, old in before["teacher"].items():
        expected = m * old + (1 - m) * student[key]
        torch.testing.assert_close(teacher[key], expected, rtol=1e-6, atol=1e-7, msg=key)
