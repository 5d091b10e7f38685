"""The contract every registered method keeps with the engine, checked as a loop over the
registry: a new method is covered the moment it registers, with no test of its own.

Each method is built at the tiny size of its golden-record run (tests/golden/record.py). Its
exports, in every format, are checked by tests/test_export_every_method.py, over the same
registry.
"""

from __future__ import annotations

import copy

import pytest
import torch

from densessl.methods import StepState, TeacherStudent
from densessl.registry import METHODS

from conftest import state_at
from tiny_methods import RUNS, tiny_batch, tiny_method

NAMES = METHODS.names()


def with_momentum(method, momentum: float) -> StepState:
    state = state_at(method, 0)
    return StepState(state.step, {**state.values, "teacher_momentum": momentum})


def buffers(method) -> dict[str, torch.Tensor]:
    """Queues and centres: every buffer outside the networks' batch-norm statistics (which any
    forward pass in training mode moves)."""
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    return {
        name: value.clone()
        for name, value in method.named_buffers()
        if not name.startswith(("student.", "teacher.")) and not name.endswith(statistics)
    }


def test_every_method_has_a_tiny_run():
    assert set(NAMES) == set(RUNS)


@pytest.mark.parametrize("name", NAMES)
def test_one_cpu_step_gives_a_finite_loss_and_gradients(name, tmp_path):
    method, cfg = tiny_method(name, tmp_path)
    out = method(tiny_batch(method, cfg), state_at(method, 0))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for v in out.logs.values())
    out.loss.backward()
    grads = [p.grad for p in method.student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_moves_only_by_the_momentum_the_engine_passes(name, tmp_path):
    method, _ = tiny_method(name, tmp_path)
    assert isinstance(method, TeacherStudent)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    with torch.no_grad():  # a student away from its teacher, so that a copy shows
        for p in method.student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    teacher = copy.deepcopy(method.teacher.state_dict())
    method.after_step(with_momentum(method, 1.0))  # m = 1 keeps the teacher
    for key, value in method.teacher.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    method.after_step(with_momentum(method, 0.0))  # m = 0 copies the student
    student = dict(method.student.named_parameters())
    for key, value in method.teacher.named_parameters():
        assert torch.equal(value, student[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_an_aborted_step_leaves_no_pending_queue_or_centre_update(name, tmp_path):
    method, cfg = tiny_method(name, tmp_path)
    before = buffers(method)
    method(tiny_batch(method, cfg), state_at(method, 0))
    method.after_step_aborted()
    method.after_step(with_momentum(method, 1.0))  # would flush whatever were still pending
    for key, value in buffers(method).items():
        assert torch.equal(value, before[key]), key
