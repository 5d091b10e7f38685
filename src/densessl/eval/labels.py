"""Few-label protocols: a fixed subset of a labelled split, drawn by a seed.

``--labels 10%`` keeps ``round(0.10 * N)`` images (at least 1), ``--labels 37`` keeps 37: the
first ``k`` of a seeded permutation, so inits compared at one seed see the same images and a
larger fraction contains the smaller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from densessl.errors import ConfigError

ALL = "100%"
_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def label_count(spec: str | int | float, total: int) -> int:
    """How many of ``total`` images ``spec`` ("10%", "37", 37) keeps; :class:`ConfigError` if
    not a count or percentage, zero, over 100%, or more than ``total``."""
    match = _SPEC.match(str(spec))
    if match is None:
        raise ConfigError(f"--labels {spec}: give a share such as 10% or a count such as 37")
    value, percent = float(match.group(1)), match.group(2) == "%"
    if value <= 0:
        raise ConfigError(f"--labels {spec}: give more than 0 labelled images")
    if percent:
        if value > 100:
            raise ConfigError(f"--labels {spec}: a share is at most 100%")
        return max(1, round(value / 100 * total))
    if value != int(value):
        raise ConfigError(f"--labels {spec}: a count of images is a whole number (or use %)")
    if value > total:
        raise ConfigError(
            f"--labels {spec}: the training split has only {total} images; give at most "
            f"{total} or a share such as 10%"
        )
    return int(value)


def label_subset(total: int, spec: str | int | float, seed: int) -> list[int]:
    """The indices (sorted) of the labelled images ``spec`` keeps at ``seed``."""
    count = label_count(spec, total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


def missing_classes(
    class_counts: np.ndarray | Sequence[int], class_names: Sequence[str]
) -> list[str]:
    """The classes with no labelled pixel in a subset (their IoU can only come from chance)."""
    return [name for name, count in zip(class_names, class_counts, strict=True) if count == 0]


class Subset:
    """The images ``indices`` of a segmentation dataset, as a dataset of its own."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.num_classes = dataset.num_classes
        self.class_names = dataset.class_names
        self.ignore_index = dataset.ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def describe(self, i: int) -> str:
        return self.dataset.describe(self.indices[i])
