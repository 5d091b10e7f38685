"""Plan for writing the built-in scenes to disk as a labelled dataset (segmentation or COCO).

The ``val`` split uses :func:`held_out_seed`, so no val scene was trained or pretrained on. The
:data:`MANIFEST_NAME` file naming the layout is written last, so an interrupted export is not
taken for a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from densessl.errors import DataError

SPLITS = ("train", "val")
MANIFEST_NAME = "densessl_dataset.json"
# Offset between a pretraining seed and the seed of held-out synthetic scenes: large, so that no
# plausible run seed draws the held-out scenes.
HELD_OUT_SEED_OFFSET = 1_000_003


def held_out_seed(seed: int) -> int:
    """The seed of synthetic scenes held out from a pretraining run that used ``seed``."""
    return seed + HELD_OUT_SEED_OFFSET


@dataclass(frozen=True)
class SceneSplits:
    """What a synthetic export writes: scenes per split, their seeds, file-name digits."""

    out: Path
    counts: dict[str, int]
    seeds: dict[str, int]
    digits: int


def begin_scene_export(
    out: str | Path, num_images: int, image_size: int, seed: int, own_names: set[str]
) -> SceneSplits:
    """Check the arguments and the target folder (new, empty, or holding only ``own_names``),
    remove its manifest, and plan the train / held-out val splits.

    Raises:
        DataError: bad sizes, ``out`` is a file, or a folder holding other files.
    """
    if num_images < 1 or image_size < 1:
        raise DataError(
            f"cannot write {out}: num_images ({num_images}) and image_size ({image_size}) "
            "must be at least 1"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"output path is a file: {out}; pass a new or empty folder")
    ours = {*SPLITS, MANIFEST_NAME, *own_names}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if foreign:
        raise DataError(
            f"output folder {out} holds other files ({', '.join(foreign[:3])}); pass a new or "
            "empty folder so that nothing else gets mixed into the dataset"
        )
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    return SceneSplits(
        out=out,
        counts={"train": num_images, "val": max(1, num_images // 4)},
        seeds={"train": seed, "val": held_out_seed(seed)},
        digits=max(5, len(str(num_images - 1))),
    )
