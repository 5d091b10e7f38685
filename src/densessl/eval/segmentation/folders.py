"""The generic layout: ``DIR/<split>/images/*`` with ``DIR/<split>/masks/<same stem>.png``
(pixel = class id, 255 = ignore) and ``DIR/classes.txt`` (line k names class k);
``DIR/images`` + ``DIR/masks`` are used when ``DIR/<split>`` does not exist."""

from __future__ import annotations

from pathlib import Path

from densessl.errors import DataError
from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout
from densessl.eval.segmentation.files import (
    FileSegmentation,
    images_in,
    lookup_table,
    need_folder,
    pair_by_name,
)
from densessl.registry import SEG_LAYOUTS

CLASS_LIST_NAME = "classes.txt"


def _read_class_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(
            f"class list not found: {path}; write one class name per line (line k = class id k)"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").strip("\n").splitlines()]
    if not names or not all(names):
        raise DataError(
            f"class list {path} is empty or has a blank line; write one class name "
            "per line (line k = class id k)"
        )
    if len(names) > IGNORE_INDEX:
        raise DataError(
            f"class list {path} names {len(names)} classes; at most {IGNORE_INDEX} "
            f"fit 8-bit masks ({IGNORE_INDEX} = ignore)"
        )
    return names


def open_folders(root: Path, split: str) -> FileSegmentation:
    base = root / split if (root / split).is_dir() else root
    fix = f"expected {root}/<split>/images and .../masks, or {root}/images and {root}/masks"
    image_dir = need_folder(base / "images", f"images folder of split '{split}'", fix)
    mask_dir = need_folder(base / "masks", f"masks folder of split '{split}'", fix)
    names = _read_class_list(root / CLASS_LIST_NAME)
    pairs = pair_by_name(
        images_in(image_dir, split), image_dir, mask_dir, lambda p: p.stem + ".png"
    )
    lookup = lookup_table(256, len(names), ignored=(IGNORE_INDEX,))
    return FileSegmentation(pairs, names, lookup, "folders")


SEG_LAYOUTS.register("folders")(
    SegLayout(
        open_folders,
        lambda root: (root / CLASS_LIST_NAME).is_file(),
        "DIR/classes.txt + DIR/<split>/images + DIR/<split>/masks",
        priority=4,
    )
)
