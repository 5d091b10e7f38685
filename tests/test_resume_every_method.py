"""Resume for every registered method: a run stopped after 3 of its 6 steps (the engine's own
interrupt path, as Ctrl-C or a preemption's SIGTERM) and resumed for the other 3 logs the same
losses and ends with exactly the same state as 6 uninterrupted steps.

Weights, optimizer moments, queues, centres, RNG and data position all have to come back for
that; the lr warm-up, BYOL-style momentum cosines and DINO's epoch-based schedules (2-step
epochs) all cross the resume point.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import densessl.engine.train as engine_train
from densessl.engine.train import train
from densessl.registry import METHODS
from densessl.runs import load_checkpoint

from engine_harness import tiny_config

STEPS, STOP = 6, 3

# DINO and SelfPatch (stochastic depth) and MCL (montage placement) draw from torch's global
# generator inside their step: their cases also check that the RNG is restored after the
# setup's own draws (iter(loader) draws the loader's base seed).
CASES = METHODS.names()


def logged_losses(run_dir) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def interrupt_at(step: int, monkeypatch) -> None:
    """Send this process SIGINT during the step that ends at ``step``, so the run stops there."""
    real_step = engine_train.train_step

    def step_or_interrupt(s, state):
        if state.step == step - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(s, state)

    monkeypatch.setattr(engine_train, "train_step", step_or_interrupt)


@pytest.mark.parametrize("name", CASES)
def test_stop_and_resume_equals_the_straight_run(name, tmp_path, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = {"steps": STEPS, "optim.warmup_steps": 2}
    train(tiny_config(name, straight, **extra))
    with monkeypatch.context() as patch:
        interrupt_at(STOP, patch)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(name, split, **extra))
    assert load_checkpoint(split / "checkpoints" / "last.pt")["step"] == STOP
    train(tiny_config(name, split, **extra), resume=True)

    expected = logged_losses(straight)
    assert [step for step, _ in expected] == list(range(1, STEPS + 1))
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in expected)
    assert logged_losses(split) == expected
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert set(a) == set(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
