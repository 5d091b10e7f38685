"""ADE20K (ADEChallengeData2016): ``DIR/{images,annotations}/{training,validation}``;
0 -> ignore, ``k`` -> ``k - 1``; split ``train`` means ``training``, ``val`` ``validation``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout
from densessl.eval.segmentation.files import (
    UNDEFINED,
    FileSegmentation,
    images_in,
    need_folder,
    pair_by_name,
    subfolders,
)
from densessl.registry import SEG_LAYOUTS

# The 150 classes of the ADE20K scene-parsing benchmark (objectInfo150), first name of each.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
ADE20K_SPLITS = {"train": "training", "val": "validation"}


def _ade20k_root(root: Path) -> Path:
    nested = root / "ADEChallengeData2016"
    return nested if not (root / "images").is_dir() and nested.is_dir() else root


def open_ade20k(root: Path, split: str) -> FileSegmentation:
    ade = _ade20k_root(root)
    folder = ADE20K_SPLITS.get(split, split)
    image_dir = need_folder(
        ade / "images" / folder,
        f"ade20k split '{split}'",
        f"splits found: {', '.join(subfolders(ade / 'images')) or 'none'}",
    )
    label_dir = need_folder(
        ade / "annotations" / folder, "ade20k label folder", f"put the labels of {image_dir} there"
    )
    pairs = pair_by_name(
        images_in(image_dir, split), image_dir, label_dir, lambda p: p.stem + ".png"
    )
    # Stored 0 is "other" (unscored); the 150 classes are stored as 1..150.
    lookup = np.full(256, UNDEFINED, dtype=np.int64)
    lookup[0] = IGNORE_INDEX
    lookup[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES))
    return FileSegmentation(pairs, ADE20K_CLASSES, lookup, "ade20k")


def looks_like_ade20k(root: Path) -> bool:
    ade = _ade20k_root(root)
    return (ade / "images").is_dir() and (ade / "annotations").is_dir()


SEG_LAYOUTS.register("ade20k")(
    SegLayout(open_ade20k, looks_like_ade20k, "DIR/images + DIR/annotations", priority=2)
)
