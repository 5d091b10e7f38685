"""CamVid (SegNet's copy): ``DIR/<split>/`` images, labels of the same file name in
``DIR/<split>annot/``; 11 classes, void (11) -> ignore."""

from __future__ import annotations

from pathlib import Path

from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout
from densessl.eval.segmentation.files import (
    FileSegmentation,
    images_in,
    lookup_table,
    need_folder,
    pair_by_name,
    subfolders,
)
from densessl.registry import SEG_LAYOUTS

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_VOID = 11


def _label_name(image: Path) -> str:
    # SegNet's CamVid uses the image's own file name; accept a .png label for other formats.
    return image.name if (image.suffix.lower() == ".png") else image.stem + ".png"


def open_camvid(root: Path, split: str) -> FileSegmentation:
    splits = [name for name in subfolders(root) if (root / f"{name}annot").is_dir()]
    image_dir = need_folder(
        root / split, f"camvid split '{split}'", f"splits found: {', '.join(splits) or 'none'}"
    )
    label_dir = need_folder(
        root / f"{split}annot", "camvid label folder", f"put the labels of {image_dir} there"
    )
    pairs = pair_by_name(images_in(image_dir, split), image_dir, label_dir, _label_name)
    # 255 is accepted as ignore too: some CamVid copies store void that way.
    lookup = lookup_table(256, len(CAMVID_CLASSES), ignored=(CAMVID_VOID, IGNORE_INDEX))
    return FileSegmentation(pairs, CAMVID_CLASSES, lookup, "camvid")


def looks_like_camvid(root: Path) -> bool:
    children = set(subfolders(root))
    return any(f"{name}annot" in children for name in children)


SEG_LAYOUTS.register("camvid")(
    SegLayout(open_camvid, looks_like_camvid, "DIR/<split> + DIR/<split>annot", priority=0)
)
