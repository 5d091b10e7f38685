"""Every registered method at the tiny size of its golden-record run, with a batch to feed it.

Shared by the registry-wide tests (contract, wiring, loss-falls, bf16 autocast), so that they
build each method and its views one way.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from densessl.config import build_config
from densessl.data.batch import collate_views
from densessl.data.batch_augment import augment_batch
from densessl.data.pretrain import MultiViewDataset
from densessl.data.synthetic import SyntheticScenes
from densessl.methods import build_method, get_method
from densessl.registry import METHODS

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RUNS  # the tiny run of every method


def where_config_has(name: str, settings: dict) -> dict:
    """The ``settings`` (field -> value) that method ``name``'s config has, as overrides: how a
    test applies a setting to every method it concerns without naming them."""
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).Config)}
    return {f"method.{key}": value for key, value in settings.items() if key in fields}


def is_vit(name: str) -> bool:
    """Whether ``name``'s tiny run trains a ViT (else a ResNet-18)."""
    return RUNS[name]["backbone"].startswith("vit")


def tiny_method(name: str, out: Path, **extra):
    """``name`` built like the engine builds it, from its golden run plus ``extra`` overrides."""
    overrides = {**RUNS[name], "out": str(out), **extra}
    cfg = build_config(get_method(name), overrides=[f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    return build_method(cfg), cfg


class SceneBoxes:
    """The built-in scenes' own instance boxes as proposals: annotations, so not SoCo's
    unsupervised setting; for tests that need known boxes without selective search."""

    def __init__(self, scenes: SyntheticScenes) -> None:
        self.scenes = scenes

    def __call__(self, i: int):
        return self.scenes.scene(i).boxes  # (M, 4) float32 xyxy source pixels


def tiny_batch(method, cfg, n: int = 4):
    """The method's views of ``n`` built-in scenes, collated and augmented like a train step (SoCo
    reads the scenes' own boxes as proposals, to skip selective search)."""
    scenes = SyntheticScenes(num_images=n, image_size=cfg.data.synthetic_size)
    proposals = SceneBoxes(scenes) if method.needs_proposals else None
    dataset = MultiViewDataset(scenes, method.make_transform(), 0, proposals)
    return augment_batch(collate_views([dataset[(0, i)] for i in range(n)]))


@torch.no_grad()
def perturb_student(method, scale: float = 0.05, seed: int = 1) -> None:
    """Move every student parameter away from the teacher's copy, as training does, so that a
    computation that uses the wrong network gives another value."""
    generator = torch.Generator().manual_seed(seed)
    for p in method.student.parameters():
        p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
