"""``make demo``: does dense pretraining help? DenseCL vs MoCo-v2 vs random init vs raw pixels.

On the built-in aerial scenes, DenseCL and MoCo-v2 pretrain a ResNet-18 with their small-data
recipes (data, queue and length: ``DEMO_SETTINGS``); both, random init and raw pixels are probed
on held-out scenes (linear, also on a tenth of the labels; k-NN; correspondence). RUN/report.md
(:mod:`densessl.demo_report`) holds the table, margins beside their seed spread, and pictures.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from densessl.config import build_config
from densessl.data.built_in import built_in_scenes
from densessl.demo_report import PROBES, DemoFacts, read_spread, write_report
from densessl.engine.train import train
from densessl.errors import OutputError
from densessl.eval.correspondence import correspondence_accuracy
from densessl.eval.drift import run_drift
from densessl.eval.labels import Subset, label_count, label_subset
from densessl.eval.protocols.frozen_probe import frozen_scores
from densessl.eval.scene_export import held_out_seed
from densessl.eval.segmentation import SyntheticSegmentation
from densessl.eval.weights import load_backbone
from densessl.export import export
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR
from densessl.viz import plot_correspondences, plot_feature_pca, plot_loss_curves

METHODS = {"DenseCL": "densecl", "MoCo-v2": "mocov2"}
# The small-data recipe of each method; the two files differ only in the method.
RECIPES = {method: RECIPES_DIR / f"{method}_small_data.yaml" for method in METHODS.values()}
DEMO_STEPS = 100
# Scenes rendered at 4/3 of the 160 px view side, as the earlier 96 px views' 128 px scenes
# were: a crop of the whole scene is downscaled, not upsampled.
SCENE_SIZE = 213
# What the demo sets on top of the recipe: the data, and a length that fits the install, two
# pretrainings of 160 px views and the probes in ten minutes on 2 CPU cores of the slower
# machines measured (the recipe's own length is 82 epochs). The queue holds one epoch of keys,
# as the recipe asks of a data set this size.
DEMO_SETTINGS = (
    "data.scenes=aerial",
    "data.synthetic_images=4096",
    f"data.synthetic_size={SCENE_SIZE}",
    "method.queue_size=4096",
    f"steps={DEMO_STEPS}",
    "data.workers=2",
    "log_every=5",
    "checkpoint_every=100",
)
DEMO_MARK = ".densessl-demo"  # a folder the demo wrote, which the next demo may replace
SCENES = "aerial"
PROBE_SIZE = 128  # eval image side: C5 is a 4x4 grid, C4 8x8 (256 px measured: BENCHMARKS.md)
PROBE_LEVELS = ("c4", "c5")
# Held-out scenes: the probes' labelled and scored ones, and those of the correspondence check
# (one crop pair each, at the pretraining's scene and view sizes).
PROBE_TRAIN_IMAGES, PROBE_VAL_IMAGES, CORRESPONDENCE_IMAGES = 300, 100, 32
PROBE_IMAGES = (PROBE_TRAIN_IMAGES, PROBE_VAL_IMAGES, CORRESPONDENCE_IMAGES)
FEW_LABELS = "10%"  # the few-label linear probe: this share of the probe's labelled scenes
# --quick: a check that everything runs (an installed package, CI), not a measurement
QUICK_STEPS, QUICK_PROBE_IMAGES = 2, (24, 8, 4)
BASELINES = {"random init": "random", "raw pixels": "pixels"}


def pretraining_config(
    method: str,
    run_dir: Path,
    seed: int = 0,
    steps: int | None = None,
    overrides: tuple = (),
    recipe: Path | None = None,
) -> DictConfig:
    """The run config of ``method``: its small-data recipe and the demo's settings, scenes drawn
    with ``seed``; ``overrides`` (``KEY=VALUE``) change it, ``recipe`` replaces it with a file."""
    base, settings = (RECIPES[method], DEMO_SETTINGS) if recipe is None else (recipe, ())
    run = [f"out={run_dir}", f"seed={seed}"] + ([f"steps={steps}"] if steps else [])
    return build_config(get_method(method), base, overrides=[*settings, *run, *overrides])


def probe_sets(
    seed: int = 0, size: int = PROBE_SIZE, counts: tuple[int, ...] = PROBE_IMAGES
) -> tuple[SyntheticSegmentation, SyntheticSegmentation]:
    """Labelled scenes that no pretraining run of ``seed`` has seen (probe training, scoring),
    rendered ``size`` px square, ``counts`` of each."""
    first = held_out_seed(seed)
    train_set = SyntheticSegmentation(counts[0], size, first, scenes=SCENES)
    val_set = SyntheticSegmentation(counts[1], size, first + 1, scenes=SCENES)
    return train_set, val_set


def probe(
    weights: str,
    train_set,
    val_set,
    seed: int = 0,
    size: int = PROBE_SIZE,
    correspondence_images: int = CORRESPONDENCE_IMAGES,
) -> dict[str, dict]:
    """Scores of frozen ``weights`` (a file, random or pixels): k-NN, the linear probe on every
    and on :data:`FEW_LABELS` labelled scenes, and (backbones only) the correspondence accuracy."""
    backbone = load_backbone(weights, "resnet18")
    levels = None if weights == BASELINES["raw pixels"] else list(PROBE_LEVELS)
    few = Subset(train_set, label_subset(len(train_set), FEW_LABELS, seed))
    every = frozen_scores(backbone, train_set, val_set, levels, size, seed)
    scores = {
        "knn": every["knn"].to_dict(),
        "linear": every["linear"].to_dict(),
        "linear_few": frozen_scores(backbone, few, val_set, levels, size, seed, ("linear",))[
            "linear"
        ].to_dict(),
    }
    if levels is not None:
        images = correspondence_scenes(seed, correspondence_images)
        view = int(OmegaConf.load(RECIPES["densecl"]).data.image_size)
        scores["correspondence"] = correspondence_accuracy(
            backbone, images, view, seed=seed
        ).to_dict()
    return scores


def correspondence_scenes(seed: int, count: int) -> list:
    """``count`` held-out scenes of ``seed`` at the pretraining's scene size, for the
    correspondence check."""
    scenes = built_in_scenes(SCENES, count, SCENE_SIZE, held_out_seed(seed) + 2)
    return [scenes.load_image(i) for i in range(count)]


def compare(
    out: Path,
    seed: int = 0,
    steps: int | None = None,
    probe_size: int = PROBE_SIZE,
    recipe: Path | None = None,
    probe_images: tuple[int, int, int] = PROBE_IMAGES,
    overrides: tuple[str, ...] = (),
) -> tuple[dict, dict, dict]:
    """Pretrain both methods (``recipe`` in place of the demo's, if given), probe them and both
    baselines on ``probe_size`` px scenes (``probe_images``: labelled, scored, correspondence).
    Returns scores (row -> probe -> scores), run directories (method -> Path), seconds per stage.
    """
    seconds: dict[str, float] = {}
    runs: dict[str, Path] = {}
    for name, method in METHODS.items():
        start = time.perf_counter()
        runs[name] = out / method
        train(pretraining_config(method, runs[name], seed, steps, overrides, recipe=recipe))
        seconds[f"{name} pretraining"] = time.perf_counter() - start
    weights = {
        name: str(export(run, "torchvision", out / f"resnet18_{METHODS[name]}.pt").path)
        for name, run in runs.items()
    }
    start = time.perf_counter()
    scores = probe_all(weights, seed, probe_size, probe_images)
    seconds["probes"] = time.perf_counter() - start
    return scores, runs, seconds


def probe_all(
    weights: dict[str, str],
    seed: int = 0,
    probe_size: int = PROBE_SIZE,
    probe_images: tuple[int, int, int] = PROBE_IMAGES,
) -> dict:
    """Scores of every row: the pretrained ``weights`` (row name -> exported file) and both
    baselines, probed on ``seed``'s held-out scenes at ``probe_size`` px."""
    train_set, val_set = probe_sets(seed, probe_size, probe_images)
    rows = {**weights, **BASELINES}
    return {
        name: probe(w, train_set, val_set, seed, probe_size, probe_images[2])
        for name, w in rows.items()
    }


def draw_figures(out: Path, runs: dict[str, Path]) -> dict[str, str]:
    scenes = built_in_scenes(SCENES, 8, 160, held_out_seed(0) + 1)
    images = [scenes.load_image(i) for i in range(4)]
    figures = {"loss": plot_loss_curves(runs, out / "loss.png").name}
    densecl = load_backbone(str(out / "resnet18_densecl.pt"), "resnet18")
    plot_correspondences(densecl, images[0], out / "matches.png", size=160)
    figures["matches"] = "matches.png"
    for method in METHODS.values():
        backbone = load_backbone(str(out / f"resnet18_{method}.pt"), "resnet18")
        path = out / f"pca_{method}.png"
        figures[f"pca_{method}"] = plot_feature_pca(backbone, images, path, size=160).name
    return figures


def fresh_folder(out: Path) -> None:
    """Empty ``out`` for a new demo: a folder an earlier demo wrote is replaced; any other
    non-empty folder, or a file, is refused (the demo never deletes what it did not write)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the demo")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DEMO_MARK).is_file():
            raise OutputError(
                f"--out {out} holds files the demo did not write; give a new or empty folder "
                f"(e.g. --out {out / 'demo'})"
            )
        shutil.rmtree(out)  # an earlier demo's: the demo always starts fresh
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("written by densessl demo; the next demo may replace it\n")


def run_demo(out: Path, steps: int | None = None, quick: bool = False) -> Path:
    """Pretrain, probe and report into ``out`` (``densessl demo``); returns the report.
    ``quick``: a few steps and small probes, to check that everything runs (no measurement).
    OutputError if ``out`` is a file, or a non-empty folder the demo did not write.
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    fresh_folder(out)
    if quick:
        steps = steps or QUICK_STEPS
    probe_images = QUICK_PROBE_IMAGES if quick else PROBE_IMAGES
    overrides = ("data.workers=0",) if quick else ()  # no batches prefetched beyond the two
    scores, runs, seconds = compare(out, steps=steps, probe_images=probe_images,
                                    overrides=overrides)  # fmt: skip
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    figures = draw_figures(out, runs)
    steps = json.loads((runs["DenseCL"] / "summary.json").read_text())["steps"]
    facts = demo_facts(steps, probe_images)
    drift = {name: run_drift(run) for name, run in runs.items()}
    report = write_report(out, scores, seconds, facts, figures, read_spread(), drift)
    print(f"\nreport: {report}")
    print(f"  {'':12s} " + "  ".join(f"{PRINTED[p]:>8s}" for p in PROBES))
    for name, s in scores.items():
        print(f"  {name:12s} " + "  ".join(f"{s[p]['miou']:8.1f}" for p in PROBES))
    return report


PRINTED = {"knn": "k-NN", "linear": "linear", "linear_few": "few-label"}


def demo_facts(steps: int, probe_images: tuple[int, int, int] = PROBE_IMAGES) -> DemoFacts:
    """What this demo ran, for the report."""
    recipe = OmegaConf.load(RECIPES["densecl"])  # batch and view size: both recipes share them
    scenes = OmegaConf.from_dotlist(list(DEMO_SETTINGS)).data.synthetic_images
    return DemoFacts(
        steps=steps,
        batch=int(recipe.batch_size),
        view=int(recipe.data.image_size),
        scenes=int(scenes),
        classes=list(built_in_scenes(SCENES, 1, 8, 0).class_names),
        recipes=[path.stem for path in RECIPES.values()],
        probe_size=PROBE_SIZE,
        levels=list(PROBE_LEVELS),
        probe_train=probe_images[0],
        probe_few=label_count(FEW_LABELS, probe_images[0]),
        probe_val=probe_images[1],
        correspondence_images=probe_images[2],
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m densessl.demo [--out DIR] [--steps N] [--quick]``: ``densessl demo``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m densessl.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    run_demo(Path(args.out), steps=args.steps, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
