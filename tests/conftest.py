"""Shared fixtures: tiny configurations that keep every test within seconds on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


def tiny_overrides(out, steps: int = 3, **extra) -> list[str]:
    """A DenseCL/MoCo run small enough for a unit test: ResNet-18 at 64 px, batch 8, queue 16."""
    values = {
        "out": str(out),
        "backbone": "resnet18",
        "batch_size": 8,
        "steps": steps,
        "data.image_size": 64,
        "data.synthetic_images": 32,
        "data.synthetic_size": 80,
        "data.workers": 0,
        "method.queue_size": 16,
        "method.dim": 16,
        "method.hidden_dim": 32,
        "log_every": 1,
        "checkpoint_every": 1000,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def tiny():
    return tiny_overrides


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
