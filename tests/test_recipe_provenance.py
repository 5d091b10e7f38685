"""Each shipped small-data recipe is the configuration whose CamVid row it cites.

The rows in benchmarks/results/camvid_small_data.json record the overrides each run was given on
top of benchmarks/camvid_transfer.py's shared budget; rebuilding that configuration and loading
the YAML must give the same method and optimiser settings, views and length. A recipe edited
without a measurement behind it (or a row re-run with other settings) fails here. Reads only
the results file, never CamVid itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densessl.config import build_config
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[1]
ROWS = json.loads((ROOT / "benchmarks" / "results" / "camvid_small_data.json").read_text())
CAMVID_TRAIN_IMAGES = 367

# recipe -> (method, backbone, the row it was chosen from or, for a dense method, its base's)
RECIPES = {
    "mocov2_small_data.yaml": ("mocov2", "resnet18", "mocov2 (resnet18, lr06m999p160st900)"),
    "densecl_small_data.yaml": ("densecl", "resnet18", "densecl (resnet18, lr06m999p160st900)"),
    "byol_small_data.yaml": ("byol", "resnet18", "byol (resnet18, byolsgd06nz)"),
    "soco_small_data.yaml": ("soco", "resnet18", "soco (resnet18, socosgd06nz)"),
    "mcl_small_data.yaml": ("mcl", "resnet18", "mcl (resnet18, mclsgd06)"),
    "dino_small_data.yaml": ("dino", "vit_tiny_patch16", "dino (vit_tiny_patch16, dinolr4e3)"),
    "selfpatch_small_data.yaml": (
        "selfpatch",
        "vit_tiny_patch16",
        "selfpatch (vit_tiny_patch16, selfpatchlr4e3)",
    ),
}


def measured_config(method: str, backbone: str, row: dict):
    """benchmarks/camvid_transfer.py's shared budget (its defaults) plus the row's overrides."""
    budget = [f"backbone={backbone}", "batch_size=32", "data.image_size=128"]
    if method in ("densecl", "mocov2"):
        budget.append("method.queue_size=256")
    if method in ("dino", "selfpatch"):
        budget += ["method.local_crops=2", "method.local_crop_size=64", "method.out_dim=4096"]
    extra = [o for o in row["overrides"] if not o.startswith("seed=")]
    return build_config(get_method(method), overrides=budget + extra)


def test_every_small_data_recipe_is_listed():
    shipped = {p.name for p in RECIPES_DIR.glob("*_small_data.yaml")}
    assert shipped == set(RECIPES)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_matches_its_measured_row(recipe):
    method, backbone, key = RECIPES[recipe]
    row = ROWS[key]
    measured = measured_config(method, backbone, row)
    shipped = build_config(get_method(method), RECIPES_DIR / recipe)
    assert shipped.method == measured.method
    assert shipped.optim == measured.optim
    assert (shipped.backbone, shipped.batch_size) == (measured.backbone, measured.batch_size)
    assert shipped.data.image_size == measured.data.image_size
    # the length: the engine's epoch is images // batch steps; within 1% of the measured steps
    steps = shipped.epochs * (CAMVID_TRAIN_IMAGES // shipped.batch_size)
    assert abs(steps - row["steps"]) <= 0.01 * row["steps"]
