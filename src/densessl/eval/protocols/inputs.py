"""What the protocols share: their options from the config layers, the segmentation sets, the
labelled subset's check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from densessl.errors import ConfigError
from densessl.registry import module_names

# The segmentation layouts, one module each, listed without importing them (tests/test_package.py
# holds them equal to the registered ones).
LAYOUTS = module_names("densessl.eval.segmentation", exclude=("base", "files", "open", "synthetic"))


def options(schema: type, config, named: dict[str, Any], overrides: Sequence[str]):
    """The protocol's options dataclass from its defaults, a YAML ``config``, the named values,
    then ``key=value`` overrides; an unknown name is refused."""
    from omegaconf import OmegaConf

    from densessl.config import build_options

    known = set(schema.__dataclass_fields__)
    unknown = sorted(set(named) - known)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return OmegaConf.to_object(build_options(schema, config, named, list(overrides)))


def check_layout(layout: str | None) -> None:
    """Refuse an unknown ``--format`` before anything is built."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--format {layout}: not a segmentation layout; use {', '.join(LAYOUTS)}")


def segmentation_sets(data, layout, split: str, train_split: str, image_size: int):
    """(train, val) of a labelled folder; without one, held-out built-in scenes (seeds unlike
    the pretraining default)."""
    from densessl.eval.segmentation import SyntheticSegmentation, open_segmentation

    if data is None:
        return (
            SyntheticSegmentation(300, image_size, seed=101),
            SyntheticSegmentation(100, image_size, 102),
        )
    return open_segmentation(data, layout, train_split), open_segmentation(data, layout, split)


def warn_missing_classes(subset, labels: str, seed: int) -> None:
    """One warning when a labelled subset holds no pixel of some class."""
    import logging

    import numpy as np

    from densessl.eval.labels import missing_classes

    if labels in ("100%", str(len(subset.dataset))):
        return
    counts = np.zeros(subset.num_classes, dtype=np.int64)
    for i in range(len(subset)):
        values = subset[i][1]
        counts += np.bincount(values[values != subset.ignore_index].ravel(),
                              minlength=subset.num_classes)[: subset.num_classes]  # fmt: skip
    absent = missing_classes(counts, subset.class_names)
    if absent:
        logging.getLogger("densessl").warning(
            "--labels %s at seed %d: no labelled pixel of %s; those classes can only score "
            "by chance (try more labels or another seed)",
            labels,
            seed,
            ", ".join(absent),
        )
