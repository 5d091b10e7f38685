"""The training loop end to end on the built-in scenes: logs, resume, divergence, accumulation."""

from __future__ import annotations

import json
import os

import pytest
import torch

from densessl.cli import main
from densessl.config import build_config
from densessl.engine.setup import build_loader, build_source
from densessl.errors import ConfigError
from densessl.methods import build_method, get_method
from densessl.methods.densecl import DenseCL
from densessl.recipes import RECIPES_DIR
from densessl.runs import load_checkpoint

from conftest import refused, tiny_overrides

RECIPES = RECIPES_DIR


def pretrain(out, steps, *extra, resume=False, method="densecl", **overrides):
    args = ["pretrain", "--out", str(out)]
    args += ["--resume"] if resume else ["--method", method]
    return main(args + tiny_overrides(out, steps=steps, **overrides)[1:] + list(extra))


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"], r["loss_dense"]) for r in map(json.loads, lines)]


def test_run_writes_config_metrics_and_checkpoint(tmp_path):
    assert pretrain(tmp_path, 2) == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("loss", "lr", "images_per_sec", "loss_global", "loss_dense"):
        assert all(key in r for r in records)
    assert "densecl" in (tmp_path / "config.yaml").read_text()
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["data_position"]["micro_batches"] == 2
    assert {"model", "optimizer", "scaler", "rng"} <= set(state)
    assert any(k.startswith("teacher.") for k in state["model"])  # EMA teacher
    assert "queue.keys" in state["model"] and "dense_queue.ptr" in state["model"]


def test_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    constant = {"optim.schedule": "constant"}
    # Two loader processes for the uninterrupted run, none for the split one: the batches
    # depend only on (seed, epoch, index), not on who loads them.
    assert pretrain(straight, 6, **constant, **{"data.workers": 2}) == 0
    assert pretrain(split, 3, **constant) == 0
    assert pretrain(split, 6, resume=True, **constant) == 0
    assert losses(split) == losses(straight)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    assert pretrain(tmp_path, 1) == 0
    capsys.readouterr()
    argv = ["pretrain", "--out", str(tmp_path), "--method", "densecl",
            *tiny_overrides(tmp_path, steps=1)[1:]]  # fmt: skip
    assert "--resume" in refused(capsys, argv, tmp_path)


def test_nan_loss_stops_with_checkpoint(tmp_path, monkeypatch, capsys):
    original = DenseCL.forward

    def poisoned(self, batch, state):
        out = original(self, batch, state)
        if state.step == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(DenseCL, "forward", poisoned)
    assert pretrain(tmp_path, 4) == 1
    err = capsys.readouterr().err
    assert "nan at step 2" in err and "last.pt" in err
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_gradient_accumulation_enqueues_after_the_step(tmp_path):
    assert pretrain(tmp_path, 2, accum_steps=2) == 0
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert int(state["model"]["queue.ptr"]) == 16 % 16  # 2 steps x 8 images in a queue of 16
    assert state["data_position"]["micro_batches"] == 4


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_other_optimizers_run(tmp_path, optimizer):
    overrides = {"optim.name": optimizer, "optim.decay_norm_and_bias": False}
    assert pretrain(tmp_path, 2, method="mocov2", **overrides) == 0


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_shipped_recipes_load(recipe):
    method = recipe.split("_")[0]
    cfg = build_config(get_method(method), RECIPES / recipe)
    assert cfg.method.name == method


def test_recipe_for_another_method_is_refused():
    with pytest.raises(ConfigError, match="densecl"):
        build_config(get_method("mocov2"), RECIPES / "densecl_r50_in1k_200ep.yaml")


def test_fp64_trains_weights_queues_and_views_in_float64(tmp_path, monkeypatch):
    """``precision=fp64`` (the golden record's): every floating tensor of the state, queues
    included, is float64, and so is every view the method receives."""
    from densessl.methods.densecl import DenseCL

    seen = []
    forward = DenseCL.forward
    monkeypatch.setattr(DenseCL, "forward", lambda self, batch, state: (
        seen.extend(v.dtype for v in batch.views), forward(self, batch, state))[1])  # fmt: skip
    assert pretrain(tmp_path, 1, precision="fp64") == 0
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    floats = {t.dtype for t in state.values() if t.is_floating_point()}
    assert floats == {torch.float64} and set(seen) == {torch.float64}


@pytest.mark.parametrize(("asked", "expected"), [(4, 2), (2, 2), (1, 1), (0, 0)])
def test_loader_workers_stop_at_the_cores_the_process_may_use(tmp_path, monkeypatch, asked,
                                                               expected):  # fmt: skip
    """More loader processes than cores only contend with training; PyTorch warns of it."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = build_config(get_method("densecl"), overrides=tiny_overrides(tmp_path))
    cfg.data.workers = asked
    loader = build_loader(cfg, build_source(cfg), build_method(cfg), torch.device("cpu"), 0)
    assert loader.num_workers == expected
