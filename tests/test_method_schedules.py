"""Each method's declared schedules (``method.schedules()``, evaluated by the engine's
``step_state``) against the papers' closed forms, at chosen steps of a 20-step run of 4-step
epochs. The constants come from each method's config; the formulas are written out here."""

from __future__ import annotations

import math

import pytest

from densessl.engine.step import step_state
from densessl.methods import build_method
from densessl.registry import METHODS
from densessl.schedules import Constant, RunLength

from engine_harness import tiny_config

RUN = RunLength(total_steps=20, steps_per_epoch=4)
STEPS = (0, 3, 4, 11, 19)


def cosine_to_one(base: float, k: int) -> float:
    """BYOL's τ(k) = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2."""
    return 1 - (1 - base) * (math.cos(math.pi * k / RUN.total_steps) + 1) / 2


def expected(name: str, c, k: int) -> dict:
    if name in ("mocov2", "densecl"):
        out = {"teacher_momentum": c.momentum}
        if name == "densecl":
            out["dense_weight"] = c.dense_weight if k >= c.dense_warmup_steps else 0.0
        return out
    if name in ("byol", "soco", "mcl"):  # the update after step k prepares step k + 1
        return {"teacher_momentum": cosine_to_one(c.momentum, k + 1)}
    warm = round(c.warmup_teacher_temp_epochs * RUN.steps_per_epoch)  # DINO, SelfPatch
    temp = c.teacher_temp
    if k < warm:
        temp = c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * k / warm
    return {
        "teacher_momentum": cosine_to_one(c.momentum, k),
        "teacher_temp": temp,
        "freeze_last_layer": float(k < round(c.freeze_last_layer_epochs * RUN.steps_per_epoch)),
    }


@pytest.mark.parametrize("name", METHODS.names())
def test_declared_schedules_equal_their_closed_forms(name, tmp_path):
    method = build_method(tiny_config(name, tmp_path))
    for k in STEPS:
        state = step_state(k, method.schedules(), RUN)
        for field, value in expected(name, method.cfg, k).items():
            assert getattr(state, field) == pytest.approx(value, rel=1e-12), (k, field)


def test_a_name_nobody_declared_fails_loudly_naming_what_was():
    state = step_state(0, {"teacher_momentum": Constant(0.99)}, RUN)
    assert state.teacher_momentum == 0.99
    with pytest.raises(AttributeError, match=r"'dense_weight'.*declared: teacher_momentum"):
        _ = state.dense_weight
