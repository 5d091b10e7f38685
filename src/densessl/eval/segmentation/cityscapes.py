"""Cityscapes: ``DIR/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``DIR/gtFine/<split>/<city>/*_gtFine_labelIds.png``; label ids -> the 19 train ids, all else
-> ignore."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densessl.errors import DataError
from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout
from densessl.eval.segmentation.files import (
    FileSegmentation,
    images_in,
    need_folder,
    pair_by_name,
    subfolders,
)
from densessl.registry import SEG_LAYOUTS

# Cityscapes label id -> train id, in train-id order; every other id is ignored.
CITYSCAPES_TRAIN_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23,
    "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
    "motorcycle": 32, "bicycle": 33,
}  # fmt: skip


def open_cityscapes(root: Path, split: str) -> FileSegmentation:
    image_dir = need_folder(
        root / "leftImg8bit" / split,
        f"cityscapes split '{split}'",
        f"splits found: {', '.join(subfolders(root / 'leftImg8bit')) or 'none'}",
    )
    label_dir = need_folder(
        root / "gtFine" / split, "cityscapes label folder", "unpack gtFine_trainvaltest there"
    )
    images = [p for p in images_in(image_dir, split) if p.name.endswith("_leftImg8bit.png")]
    if not images:
        raise DataError(
            f"split '{split}' is empty: no *_leftImg8bit.png under {image_dir}; "
            "unpack leftImg8bit_trainvaltest there"
        )
    pairs = pair_by_name(
        images,
        image_dir,
        label_dir,
        lambda p: p.name.removesuffix("_leftImg8bit.png") + "_gtFine_labelIds.png",
    )
    lookup = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lookup[list(CITYSCAPES_TRAIN_IDS.values())] = np.arange(len(CITYSCAPES_TRAIN_IDS))
    return FileSegmentation(pairs, list(CITYSCAPES_TRAIN_IDS), lookup, "cityscapes")


SEG_LAYOUTS.register("cityscapes")(
    SegLayout(
        open_cityscapes,
        lambda root: {"leftImg8bit", "gtFine"} <= set(subfolders(root)),
        "DIR/leftImg8bit + DIR/gtFine",
        priority=3,
    )
)
