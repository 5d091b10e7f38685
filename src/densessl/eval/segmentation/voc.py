"""PASCAL VOC 2012: ``DIR/JPEGImages``, ``DIR/SegmentationClass`` (palette PNGs whose indices
are class ids), ``DIR/ImageSets/Segmentation/<split>.txt``; DIR may also be a parent holding
``VOCdevkit/VOC2012`` or ``VOC2012``. 21 classes, 255 (boundaries) = ignore."""

from __future__ import annotations

from pathlib import Path

from densessl.errors import DataError
from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout
from densessl.eval.segmentation.files import FileSegmentation, lookup_table
from densessl.registry import SEG_LAYOUTS

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def voc_root(root: Path) -> Path | None:
    """The folder holding JPEGImages and SegmentationClass: ``root`` or a VOC2012 inside it."""
    for candidate in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def open_voc(root: Path, split: str) -> FileSegmentation:
    voc = voc_root(root)
    if voc is None:
        raise DataError(
            f"no PASCAL VOC layout under {root}; expected DIR/JPEGImages and "
            "DIR/SegmentationClass (DIR = VOC2012 or a parent holding VOCdevkit/VOC2012)"
        )
    lists = voc / "ImageSets" / "Segmentation"
    list_file = lists / f"{split}.txt"
    if not list_file.is_file():
        found = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
        raise DataError(
            f"voc split list not found: {list_file}; splits found: {', '.join(found) or 'none'}"
        )
    names = [
        line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if not names:
        raise DataError(f"split '{split}' is empty: {list_file} lists no images; list image ids")
    pairs = []
    for name in names:
        image, label = voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClass" / f"{name}.png"
        if not image.is_file():
            raise DataError(f"image {image} listed in {list_file} not found; add it or unlist it")
        if not label.is_file():
            raise DataError(f"no label for image {image}: expected {label}; add it or unlist it")
        pairs.append((image, label))
    lookup = lookup_table(256, len(VOC_CLASSES), ignored=(IGNORE_INDEX,))
    return FileSegmentation(pairs, VOC_CLASSES, lookup, "voc")


SEG_LAYOUTS.register("voc")(
    SegLayout(
        open_voc,
        lambda root: voc_root(root) is not None,
        "DIR/JPEGImages + DIR/SegmentationClass",
        priority=1,
    )
)
