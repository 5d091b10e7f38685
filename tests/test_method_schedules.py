"""Each method's declared schedules (``method.schedules()``, evaluated by the engine's
``step_state``) against the closed forms the method states (``method.schedule_formulas``, the
papers' formulas in plain arithmetic), at chosen steps of a 20-step run of 4-step epochs."""

from __future__ import annotations

import math

import pytest

from densessl.engine.step import step_state
from densessl.methods import build_method
from densessl.registry import METHODS
from densessl.schedules import Constant, RunLength, cosine_to_one

from engine_harness import tiny_config

RUN = RunLength(total_steps=20, steps_per_epoch=4)
STEPS = (0, 3, 4, 11, 19)


@pytest.mark.parametrize("name", METHODS.names())
def test_declared_schedules_equal_their_closed_forms(name, tmp_path):
    method = build_method(tiny_config(name, tmp_path))
    assert set(method.schedule_formulas(0, RUN)) == set(method.schedules())
    for k in STEPS:
        state = step_state(k, method.schedules(), RUN)
        for field, value in method.schedule_formulas(k, RUN).items():
            assert getattr(state, field) == pytest.approx(value, rel=1e-12), (k, field)


def test_byol_cosine_closed_form():
    """τ(k) = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: τ_base at 0, halfway at K/2, 1 at K."""
    assert cosine_to_one(0.99, 0, 20) == pytest.approx(0.99)
    assert cosine_to_one(0.99, 10, 20) == pytest.approx(0.995)
    assert cosine_to_one(0.99, 20, 20) == pytest.approx(1.0)
    assert cosine_to_one(0.9, 5, 20) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_a_name_nobody_declared_fails_loudly_naming_what_was():
    state = step_state(0, {"teacher_momentum": Constant(0.99)}, RUN)
    assert state.teacher_momentum == 0.99
    with pytest.raises(AttributeError, match=r"'dense_weight'.*declared: teacher_momentum"):
        _ = state.dense_weight
