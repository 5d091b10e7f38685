"""`make demo` pretrains with the small-data recipes themselves, on a real dense grid (issue 12).

The demo may set only its data and its length on top of the <method>_small_data recipe; and
DenseCL's C5 map must be at least 5 x 5 in training, the issue's floor for a dense term.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from densessl import demo
from densessl.models.backbones import build_backbone
from tests.test_recipes import leaves

# What the demo may change of the recipe: the queue, which the recipe asks to hold one epoch of
# the user's images, and the length (the recipe's epochs give way to the demo's steps).
DEMO_MAY_CHANGE = {"method.queue_size", "epochs"}


@pytest.mark.parametrize("method", sorted(demo.RECIPES))
def test_demo_keeps_the_small_data_recipe(method, tmp_path):
    recipe = demo.RECIPES[method]
    assert recipe.name == f"{method}_small_data.yaml"
    stated = leaves(OmegaConf.to_container(OmegaConf.load(recipe)))
    run = leaves(OmegaConf.to_container(demo.pretraining_config(method, tmp_path)))
    kept = {key: value for key, value in stated.items() if key not in DEMO_MAY_CHANGE}
    assert {key: run[key] for key in kept} == kept
    assert run["method.queue_size"] == run["data.synthetic_images"]  # one epoch of keys
    assert run["steps"] == demo.DEMO_STEPS
    assert run["data.scenes"] == demo.SCENES


def test_demo_densecl_trains_on_a_five_by_five_c5_grid(tmp_path):
    cfg = demo.pretraining_config("densecl", tmp_path)
    backbone = build_backbone(cfg.backbone).eval()
    side = cfg.data.image_size
    with torch.no_grad():
        c5 = backbone(torch.zeros(1, 3, side, side))["c5"]
    assert min(c5.shape[-2:]) >= 5
    # and every cell sees the view: the side is a whole number of 32 px strides, not a padded edge
    assert side % 32 == 0
