"""A COCO-format detection set from CamVid's per-pixel labels: boxes of the object classes.

CamVid labels classes, not instances, so an object is a connected component of one object
class's pixels (8-connectivity). The rule, stated once:

- **classes**: Car, Pedestrian, Bicyclist, SignSymbol (the countable things of CamVid's eleven);
- **merged**: objects of one class that touch (a crowd, a row of parked cars) are one
  component and get one box; an object cut in two by an occluder (a pole before a car) gets two;
- **tiny**: a component under ``--min-area`` pixels (default 50, at CamVid's 480 x 360) is too
  small to label reliably; it is written with ``iscrowd=1``, which COCO evaluation and
  ``densessl eval detect`` treat as an ignore region: neither taught nor scored, so a detector
  is not penalised for finding it or for missing it.

Reads a split folder in SegNet's layout (``S/`` images with labels of the same name in
``Sannot/``: ``../shared/data/camvid`` or the ``seg`` folder of ``camvid_heldout.py``) and
writes ``OUT/S/images/`` (links, no copies) and ``OUT/S/annotations.json``, the layout ``eval
detect --data OUT`` reads.

    python benchmarks/camvid_boxes.py --data runs/camvid_heldout/seg --out runs/camvid_boxes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# CamVid (SegNet) label id -> COCO category name; ids 0..10 are classes, 11 is void.
OBJECT_CLASSES = {8: "Car", 9: "Pedestrian", 10: "Bicyclist", 6: "SignSymbol"}
MIN_AREA = 50


def components(label: np.ndarray, class_id: int) -> list[tuple[list[int], int]]:
    """([x, y, w, h], pixel count) of every 8-connected component of ``label == class_id``,
    in the order OpenCV numbers them (top to bottom, left to right by first pixel)."""
    mask = (label == class_id).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return [
        ([int(v) for v in stats[k, :4]], int(stats[k, cv2.CC_STAT_AREA])) for k in range(1, count)
    ]


def boxes_of(label: np.ndarray, min_area: int = MIN_AREA) -> list[dict]:
    """COCO annotations (without ids) of one (H, W) label map: one per component of an object
    class, ``iscrowd=1`` when the component has fewer than ``min_area`` pixels."""
    annotations = []
    for class_id in OBJECT_CLASSES:
        for box, area in components(label, class_id):
            annotations.append(
                {
                    "category_id": class_id,
                    "bbox": box,
                    "area": area,
                    "iscrowd": int(area < min_area),
                }
            )
    return annotations


def write_split(data: Path, split: str, out: Path, min_area: int = MIN_AREA) -> dict[str, int]:
    """Write ``out/split/images/`` and ``out/split/annotations.json``; returns the counts of
    images, boxes and ignored (tiny) components."""
    images_dir, labels_dir = data / split, data / f"{split}annot"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise SystemExit(f"{data}: no {split}/ and {split}annot/; pass a SegNet-layout split")
    target = out / split / "images"
    target.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, image in enumerate(sorted(p for p in images_dir.iterdir() if p.is_file()), 1):
        label_path = labels_dir / image.name
        if not label_path.is_file():
            continue
        label = np.asarray(Image.open(label_path))
        link = target / image.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(image.resolve())
        height, width = label.shape
        images.append({"id": image_id, "file_name": image.name, "width": width, "height": height})
        for annotation in boxes_of(label, min_area):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    categories = [{"id": k, "name": name} for k, name in sorted(OBJECT_CLASSES.items())]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / split / "annotations.json").write_text(json.dumps(coco))
    ignored = sum(a["iscrowd"] for a in annotations)
    return {"images": len(images), "boxes": len(annotations) - ignored, "ignored": ignored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="SegNet-layout split folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the COCO set")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--min-area", type=int, default=MIN_AREA, help="smaller: ignore region")
    args = parser.parse_args()
    for split in args.splits:
        counts = write_split(args.data, split, args.out, args.min_area)
        print(f"{split}: " + ", ".join(f"{name} {count}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
