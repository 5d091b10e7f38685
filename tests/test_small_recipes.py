"""Every shipped small-data recipe (the ones that are not a paper's ``*_<N>ep.yaml``) loads
for each method it is meant for and runs one training step, with its own settings kept; so does
the demo's former recipe, which benchmarks/ keeps to reproduce the searches made on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from densessl.config import build_config
from densessl.engine.train import train
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR
from tests.golden.record import RUNS
from tests.test_recipes import leaves

ROOT = Path(__file__).resolve().parents[1]
SMALL = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.stem.endswith("ep"))
FORMER_DEMO = ROOT / "benchmarks" / "recipes" / "aerial_demo_96px.yaml"
# A recipe that names no method is shared; these are the methods it is written for.
SHARED_BY = {FORMER_DEMO.name: ("densecl", "mocov2")}
# The run settings shrunk for a unit test on top of each method's tiny sizes (the golden
# record's); every other setting of the recipe is what the step runs with.
RUN = {"steps": 1, "device": "cpu", "data.workers": 0, "log_every": 1, "checkpoint_every": 1000}

CASES = [
    (path, method)
    for path in [*SMALL, FORMER_DEMO]
    for method in SHARED_BY.get(path.name, (path.name.split("_")[0],))
]


def test_there_are_small_recipes():
    assert SMALL, "no small-data recipe is shipped"


@pytest.mark.parametrize(("path", "method"), CASES, ids=[f"{p.stem}-{m}" for p, m in CASES])
def test_small_recipe_runs_one_step(path, method, tmp_path):
    shrunk = {**RUNS[method], **RUN, "out": tmp_path}
    overrides = [f"{key}={value}" for key, value in shrunk.items()]
    cfg = build_config(get_method(method), path, overrides=overrides)
    stated = leaves(OmegaConf.to_container(OmegaConf.load(path)))
    # YAML has no tuples: a stated list is the resolved tuple (crop and blur ranges).
    resolved = {k: list(v) if isinstance(v, tuple) else v
                for k, v in leaves(OmegaConf.to_container(cfg)).items()}  # fmt: skip
    kept = {k: v for k, v in stated.items() if k not in shrunk}
    assert {k: resolved[k] for k in kept} == kept
    train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 1
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").open()
              if '"loss"' in line]  # fmt: skip
    assert losses and all(math.isfinite(v) for v in losses)
