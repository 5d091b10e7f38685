"""Each recipe is written once: a method's defaults are its paper recipe, and a shipped recipe YAML
states only its differences from them."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from densessl.config import build_config
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR
from densessl.registry import METHODS

RECIPES = RECIPES_DIR
YAMLS = sorted(RECIPES.glob("*.yaml"))


def leaves(node, prefix: str = "") -> dict:
    """{"optim.base_lr": 0.3, ...} for a nested dict."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_paper_recipe(name):
    assert list(RECIPES.glob(f"{name}_*ep.yaml")), f"recipes/{name}_<backbone>_<data>_<N>ep.yaml"


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_a_recipe_states_only_its_differences(path):
    stated = leaves(OmegaConf.to_container(OmegaConf.load(path)))
    method = stated.pop("method.name", path.name.split("_")[0])
    defaults = leaves(OmegaConf.to_container(build_config(get_method(method))))
    same = [key for key, value in stated.items() if defaults[key] == value]
    assert not same, f"{path.name} restates defaults: {same}"
