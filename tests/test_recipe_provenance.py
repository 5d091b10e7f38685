"""Each shipped small-data recipe is the configuration whose CamVid row it cites.

The rows in benchmarks/results/camvid_small_data.json record the overrides each run was given on
top of benchmarks/camvid_transfer.py's shared budget; rebuilding that configuration and loading
the YAML must give the same method and optimiser settings, views and length. A recipe edited
without a measurement behind it (or a row re-run with other settings) fails here. Reads only
the results file, never CamVid itself."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from densessl.config import build_config
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[1]
ROWS = json.loads((ROOT / "benchmarks" / "results" / "camvid_small_data.json").read_text())
CAMVID_TRAIN_IMAGES = 367

MEASURED_AS = re.compile(
    r'^# Measured as the row "(?P<row>(?P<method>\w+) \((?P<backbone>\w+), \w+\))"$', re.M
)
RECIPES = sorted(p.name for p in RECIPES_DIR.glob("*_small_data.yaml"))


def measured_row(recipe: str) -> re.Match:
    """The row a small-data recipe names in its header: ``# Measured as the row "..."``."""
    match = MEASURED_AS.search((RECIPES_DIR / recipe).read_text())
    assert match, f"{recipe} names no measured row"
    return match


def measured_config(method: str, backbone: str, row: dict):
    """benchmarks/camvid_transfer.py's shared budget (its defaults) plus the row's overrides."""
    fields = {f.name for f in dataclasses.fields(get_method(method).Config)}
    budget = [f"backbone={backbone}", "batch_size=32", "data.image_size=128"]
    if "queue_size" in fields:
        budget.append("method.queue_size=256")
    if "local_crops" in fields:
        budget += ["method.local_crops=2", "method.local_crop_size=64", "method.out_dim=4096"]
    extra = [o for o in row["overrides"] if not o.startswith("seed=")]
    return build_config(get_method(method), overrides=budget + extra)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_matches_its_measured_row(recipe):
    match = measured_row(recipe)
    method, backbone, row = match["method"], match["backbone"], ROWS[match["row"]]
    assert recipe == f"{method}_small_data.yaml"
    measured = measured_config(method, backbone, row)
    shipped = build_config(get_method(method), RECIPES_DIR / recipe)
    assert shipped.method == measured.method
    assert shipped.optim == measured.optim
    assert (shipped.backbone, shipped.batch_size) == (measured.backbone, measured.batch_size)
    assert shipped.data.image_size == measured.data.image_size
    # the length: the engine's epoch is images // batch steps; within 1% of the measured steps
    steps = shipped.epochs * (CAMVID_TRAIN_IMAGES // shipped.batch_size)
    assert abs(steps - row["steps"]) <= 0.01 * row["steps"]
