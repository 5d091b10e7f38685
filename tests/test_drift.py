"""How far training moved a network (densessl.eval.drift), and the initial weights a run is
compared with (densessl.runs.initial_method)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densessl.cli import main
from densessl.errors import WeightsError
from densessl.eval.drift import conv_filters, drift_by_stage, run_drift
from densessl.runs import initial_method, open_run

from conftest import tiny_overrides


def orthogonal_step(w0: torch.Tensor, r: float) -> torch.Tensor:
    """W0 + r ||W0|| u, u a unit vector orthogonal to W0."""
    u = torch.randn_like(w0)
    u -= (u * w0).sum() / (w0 * w0).sum() * w0
    return w0 + r * w0.norm() * u / u.norm()


def test_drift_matches_the_closed_form_of_an_orthogonal_step():
    """A step of relative length r orthogonal to W0: the change is r and the cosine
    1 / sqrt(1 + r^2), whatever the scale of W0; a stage averages its convs."""
    torch.manual_seed(0)
    steps = {"conv1": 3.0, "layer1.0.conv1": 0.5, "layer1.0.conv2": 0.1}
    initial = {name: torch.randn(8, 4, 3, 3, dtype=torch.float64) * 7 for name in steps}
    final = {name: orthogonal_step(initial[name], r) for name, r in steps.items()}
    stages = drift_by_stage(initial, final)
    assert list(stages) == ["conv1", "layer1"]
    assert tuple(stages["conv1"]) == pytest.approx((1 / 10**0.5, 3.0, 1))
    cosine = (1 / (1 + 0.5**2) ** 0.5 + 1 / (1 + 0.1**2) ** 0.5) / 2
    assert tuple(stages["layer1"]) == pytest.approx((cosine, 0.3, 2))


def test_the_filters_are_a_copy_that_training_does_not_change():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    before = conv_filters(network)
    assert list(before) == ["0", "2"]  # convs only
    with torch.no_grad():
        network[0].weight.mul_(-1)
    assert drift_by_stage(before, conv_filters(network))["0"].cosine == pytest.approx(-1)


@pytest.fixture(scope="module")
def still_run(module_tmp_path):
    """A run at learning rate 0, seed 3: its weights never moved."""
    out = module_tmp_path / "run"
    overrides = tiny_overrides(out, steps=1, **{"optim.base_lr": 0.0, "seed": 3})
    assert main(["pretrain", "--method", "densecl", *overrides]) == 0
    return out


def test_a_run_at_learning_rate_zero_ends_on_its_rebuilt_init(still_run):
    """Weights that never moved give cosine 1 and change 0 in every stage; rebuilt from
    another seed, the init is unrelated (cosine near 0), and the caller's RNG is untouched."""
    stages = run_drift(still_run)
    assert list(stages) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert all(d.change == 0 and d.cosine == pytest.approx(1) for d in stages.values())
    method, cfg = open_run(still_run)
    final = conv_filters(method.exportable(None)["backbone"])
    cfg.seed = 4
    state = torch.random.get_rng_state()
    other = drift_by_stage(conv_filters(initial_method(cfg).exportable(None)["backbone"]), final)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(abs(d.cosine) < 0.2 for d in other.values())


def test_a_run_started_from_a_weights_file_has_no_seed_init(still_run):
    _, cfg = open_run(still_run)
    cfg.init = "backbone.pt"
    with pytest.raises(WeightsError, match=r"started from backbone\.pt"):
        initial_method(cfg)
