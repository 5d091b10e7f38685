"""Run health (densessl.health, engine/health_check.py): the measures against closed forms, the
warning on a run forced to collapse and its silence on a healthy one, and `densessl health`."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from densessl.cli import main
from densessl.engine.health_check import held_batch, measure
from densessl.health import (
    COLLAPSE,
    collapse_signs,
    diversity_ratio,
    effective_rank,
    entropy_ratio,
    spread,
)
from densessl.methods import get_method
from densessl.registry import METHODS

from conftest import state_at, tiny_overrides, tiny_vit_overrides


def _with_singular_values(values: list[float], n: int = 12, d: int = 9) -> torch.Tensor:
    """An (n, d) matrix whose singular values are ``values`` (then zeros)."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(n, n))
    v, _ = torch.linalg.qr(torch.randn(d, d))
    sigma = torch.zeros(n, d)
    for k, value in enumerate(values):
        sigma[k, k] = value
    return u @ sigma @ v.T


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_a_rank_k_matrix_is_k(k):
    assert effective_rank(_with_singular_values([2.0] * k)) == pytest.approx(k, rel=1e-3)


def test_effective_rank_is_the_exponential_of_the_singular_value_entropy():
    # σ = (3, 1): p = (3/4, 1/4), rank = exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 1.7548
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(_with_singular_values([3.0, 1.0])) == pytest.approx(expected, rel=1e-4)


def test_spread_is_one_for_opposite_axes_and_zero_for_one_direction():
    d = 8
    axes = torch.cat([torch.eye(d), -torch.eye(d)])  # each dimension: +1, -1, zeros: sd 1/sqrt(d)
    assert spread(3.0 * axes) == pytest.approx(1.0, rel=1e-6)
    same = torch.randn(1, d).repeat(10, 1) * torch.rand(10, 1)  # one direction, any lengths
    assert spread(same) == pytest.approx(0.0, abs=1e-6)


def test_entropy_ratio_of_uniform_one_hot_and_two_way_rows():
    assert entropy_ratio(torch.full((3, 4), 0.25)) == pytest.approx(1.0)
    assert entropy_ratio(torch.eye(4)) == pytest.approx(0.0, abs=1e-6)
    assert entropy_ratio(torch.tensor([[0.5, 0.5, 0.0, 0.0]])) == pytest.approx(0.5)  # ln2/ln4


def test_diversity_ratio_of_distinct_same_and_two_group_rows():
    assert diversity_ratio(torch.eye(4, 8)) == pytest.approx(1.0)  # 4 images, 4 outputs
    assert diversity_ratio(torch.eye(8)[[2, 2, 2, 2]]) == pytest.approx(0.0, abs=1e-6)
    two = torch.eye(8)[[0, 0, 5, 5]]  # mean (1/2, 1/2): ln 2 / ln min(4, 8) = 1/2
    assert diversity_ratio(two) == pytest.approx(0.5)
    assert diversity_ratio(torch.full((6, 3), 1 / 3)) == pytest.approx(1.0)  # ln 3 / ln 3


def test_collapse_signs_read_each_threshold():
    healthy = {"effective_rank": 20.0, "spread": 0.5, "teacher_entropy": 0.6,
               "teacher_diversity": 0.9}  # fmt: skip
    assert collapse_signs(healthy) == {}
    assert len(collapse_signs({**healthy, "effective_rank": COLLAPSE.rank})) == 1
    assert len(collapse_signs({**healthy, "spread": COLLAPSE.spread / 2})) == 1
    assert len(collapse_signs({**healthy, "teacher_entropy": 0.999})) == 1
    assert len(collapse_signs({**healthy, "teacher_diversity": COLLAPSE.diversity / 2})) == 1
    assert len(collapse_signs({**healthy, "projection_spread": COLLAPSE.projection / 2})) == 1
    assert collapse_signs({**healthy, "projection_spread": COLLAPSE.projection * 2}) == {}
    assert collapse_signs({"spread": 0.5}) == {}  # a measure the method lacks is no sign


def test_a_fresh_resnet_on_alike_street_frames_is_not_called_collapsed():
    """A fresh ResNet-18 embeds street frames nearly alike before any training; its rank, not
    its spread, tells that apart from the collapsed backbones (BENCHMARKS.md, "Collapse
    thresholds of the run health checks": BYOL's first checks on CamVid, DINO's last)."""
    fresh_on_street_frames = {"effective_rank": 4.0, "spread": 0.047}
    assert collapse_signs(fresh_on_street_frames) == {}
    collapsed_dino_backbone = {"effective_rank": 1.5, "spread": 0.039}
    assert collapse_signs(collapsed_dino_backbone).keys() == {"effective_rank"}


def test_a_backbone_that_outputs_one_vector_measures_collapsed(tmp_path):
    """Every conv weight zeroed: each image embeds to the same vector (the BN biases)."""
    cfg_args = tiny_overrides(tmp_path)
    from densessl.config import build_config
    from densessl.engine.setup import build_method_checked, build_source

    cfg = build_config(get_method("densecl"), overrides=cfg_args)
    method = build_method_checked(cfg)
    images = held_batch(build_source(cfg), cfg.data.image_size, count=16)
    assert images.shape == (16, 3, 64, 64)
    healthy = measure(method, images, state_at(method, 0))
    assert healthy["effective_rank"] > 4 and healthy["spread"] > COLLAPSE.spread
    backbone = method.exportable()["backbone"]
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.fill_(0.1)
    collapsed = measure(method, images, state_at(method, 0))
    assert collapsed["effective_rank"] <= COLLAPSE.rank and collapsed["spread"] < 1e-5
    assert backbone.training and method.training  # the modes are restored
    with torch.no_grad():
        next(backbone.parameters()).fill_(float("nan"))
    assert measure(method, images, state_at(method, 0)) == {}  # no SVD of NaN: no crash


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_healthy_tiny_run_logs_its_health_and_stays_silent(tmp_path, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="densessl"):
        assert main(["pretrain", "--method", "densecl", *tiny_overrides(tmp_path, steps=4)]) == 0
    assert "collapsed" not in caplog.text
    checks = [r for r in _records(tmp_path) if "effective_rank" in r]
    assert [r["step"] for r in checks] == [1, 2, 3, 4]  # 32 images, batch 8: a quarter epoch
    assert all(r["effective_rank"] > COLLAPSE.rank and "loss" in r for r in checks)
    assert "teacher_entropy" not in checks[0]  # MoCo's key encoder has no softmax output
    assert "teacher_diversity" not in checks[0]
    assert all(r["projection_spread"] > COLLAPSE.projection for r in checks)  # dense keys
    capsys.readouterr()
    assert main(["health", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "health at step 4 (first check: step 1)" in out and "verdict: healthy" in out


def test_a_teacher_forced_to_the_uniform_distribution_is_reported(tmp_path, caplog, capsys):
    """DINO with a teacher temperature of 1000: its target is uniform from the first step."""
    run = tmp_path / "run"
    hot = {"method.teacher_temp": 1000.0, "method.warmup_teacher_temp": 1000.0}
    with caplog.at_level(logging.WARNING, logger="densessl"):
        args = tiny_vit_overrides(run, steps=3, health_every=1, **hot)
        assert main(["pretrain", "--method", "dino", *args]) == 0
    warned = [r.message for r in caplog.records if "collapsed" in r.message]
    assert len(warned) == 1 and "teacher entropy" in warned[0]  # once, not at every check
    assert all(r["teacher_entropy"] > COLLAPSE.entropy for r in _records(run))
    capsys.readouterr()
    assert main(["health", str(run)]) == 1
    assert "verdict: collapsing: teacher entropy" in capsys.readouterr().out


def test_a_normal_tiny_dino_teacher_is_not_uniform(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "dino", *tiny_vit_overrides(run, health_every=1)]) == 0
    records = _records(run)
    assert all(r["teacher_entropy"] < COLLAPSE.entropy for r in records)
    assert all(r["teacher_diversity"] > COLLAPSE.diversity for r in records)


def test_no_checks_with_health_every_minus_one(tmp_path, capsys):
    assert main(["pretrain", "--method", "mocov2", *tiny_overrides(tmp_path, health_every=-1)]) == 0
    assert not any("effective_rank" in r for r in _records(tmp_path))
    capsys.readouterr()
    assert main(["health", str(tmp_path)]) == 2
    assert "holds no health check" in capsys.readouterr().err


def test_a_collapse_is_warned_once_while_its_values_move(tmp_path, caplog, monkeypatch):
    """Checks at steps 1-4 cross the diversity threshold from step 2 on, each with another
    value: one warning, at step 2, not one per check."""
    import densessl.engine.train as engine

    diversity = iter([0.9, 0.2, 0.18, 0.17])
    monkeypatch.setattr(
        engine, "measure", lambda *_: {"effective_rank": 9.0, "teacher_diversity": next(diversity)}
    )
    with caplog.at_level(logging.WARNING, logger="densessl"):
        assert main(["pretrain", "--method", "mocov2", *tiny_overrides(tmp_path, steps=4)]) == 0
    warned = [r.message for r in caplog.records if "collapsed" in r.message]
    assert len(warned) == 1 and warned[0].startswith("step 2:")


def _declares_projections(name: str) -> bool:
    from densessl.methods import Method

    return get_method(name).projections is not Method.projections


@pytest.mark.parametrize("name", [n for n in METHODS.names() if _declares_projections(n)])
def test_a_projector_giving_every_pixel_one_vector_is_reported_with_a_healthy_backbone(
    name, tmp_path
):
    """The teacher's layers after its backbone output their biases only (weights zeroed): the
    projections are one vector, while the backbone, and so its pooled embeddings, is as it was.
    The backbone measures cannot see this; the projection spread does."""
    from densessl.data.built_in import built_in_scenes

    from tiny_methods import tiny_method

    method, cfg = tiny_method(name, tmp_path)
    scenes = built_in_scenes("shapes", 16, cfg.data.synthetic_size, seed=0)
    images = held_batch(scenes, cfg.data.image_size)
    healthy = measure(method, images, state_at(method, 0))
    assert healthy["projection_spread"] > COLLAPSE.projection
    projection = method.projections(images)
    assert projection.ndim == 2 and projection.shape[0] >= 16  # rows: images or pixels
    backbone = set(method.teacher.backbone.parameters())
    with torch.no_grad():
        for module in method.teacher.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and weight not in backbone:
                weight.zero_()
                if module.bias is not None:
                    module.bias.uniform_(0.5, 1.0)
    collapsed = measure(method, images, state_at(method, 0))
    assert collapsed["projection_spread"] < COLLAPSE.projection
    assert collapsed["effective_rank"] == pytest.approx(healthy["effective_rank"])
    assert collapsed["spread"] == pytest.approx(healthy["spread"])
    assert "projection spread" in collapse_signs(collapsed)["projection_spread"]
