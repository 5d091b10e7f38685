"""Write the built-in scenes as a COCO-format detection dataset (train + held-out val), with
the held-out split plan of :mod:`densessl.eval.scene_export`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from densessl.data.synthetic import SyntheticScenes
from densessl.eval.detection.dataset import ANNOTATIONS_NAME
from densessl.eval.scene_export import MANIFEST_NAME, SPLITS, begin_scene_export
from densessl.progress import progress


def _scene_annotations(scene, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations of one scene: xywh boxes, visible area, compressed-RLE masks."""
    # pycocotools encodes (H, W, M) Fortran-ordered uint8 stacks.
    stack = np.asfortranarray(scene.instance_masks.transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(stack) if len(scene.labels) else []
    annotations = []
    for k, (box, label, rle) in enumerate(zip(scene.boxes, scene.labels, rles, strict=True)):
        x0, y0, x1, y1 = (float(v) for v in box)
        annotations.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": int(label),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(scene.instance_masks[k].sum()),
                "iscrowd": 0,
                # JSON cannot hold bytes; pycocotools accepts the counts back as str.
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
    return annotations


def _write_split(
    scenes: SyntheticScenes, split_dir: Path, digits: int, bar: tqdm
) -> tuple[int, int]:
    """Write one split's PNGs and annotations.json; returns (images, annotations) counted."""
    image_dir = split_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob("*.png"):  # from an earlier, larger export
        stale.unlink()
    images, annotations = [], []
    for i in range(len(scenes)):
        scene = scenes.scene(i)
        name = f"{i:0{digits}d}.png"
        Image.fromarray(scene.image, mode="RGB").save(image_dir / name)
        height, width = scene.image.shape[:2]
        # Ids start at 1: COCOeval takes a matched ground-truth id of 0 for "unmatched".
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        annotations += _scene_annotations(scene, i + 1, len(annotations) + 1)
        bar.update()
    categories = [
        {"id": k, "name": name, "supercategory": "shape"}
        for k, name in enumerate(SyntheticScenes.class_names[1:], start=1)
    ]
    document = {
        "info": {"description": f"densessl synthetic scenes, seed {scenes.seed}"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (split_dir / ANNOTATIONS_NAME).write_text(json.dumps(document), encoding="utf-8")
    return len(images), len(annotations)


def write_synthetic_coco(
    out: str | Path, num_images: int = 200, image_size: int = 128, seed: int = 0
) -> Path:
    """Render the built-in scenes into ``out`` as a COCO-format detection dataset.

    ``out/train`` (``num_images`` scenes) and ``out/val`` (``max(1, num_images // 4)`` held-out
    scenes), each ``images/<index>.png`` + ``annotations.json`` (image id = index + 1, categories
    1..4, visible-part xywh boxes, RLE masks), and ``out/densessl_dataset.json`` (``classes`` =
    ``CocoDetection.class_names``). An earlier export is replaced. Returns ``out`` as a Path;
    DataError for bad sizes, ``out`` a file, or a folder holding other files.
    """
    plan = begin_scene_export(out, num_images, image_size, seed, set())
    out, counts, seeds, digits = plan.out, plan.counts, plan.seeds, plan.digits
    written = {}
    with progress(total=sum(counts.values()), desc=f"writing {out}", unit="scene") as bar:
        for split in SPLITS:
            scenes = SyntheticScenes(counts[split], image_size, seeds[split])
            written[split] = _write_split(scenes, out / split, digits, bar)
    manifest = {
        "format": "coco",
        "task": "detection",
        "classes": list(SyntheticScenes.class_names),
        "splits": list(SPLITS),
        "source": "densessl synthetic scenes",
        "seed": seed,
        "val_seed": seeds["val"],
        "image_size": image_size,
        "images": {split: n for split, (n, _) in written.items()},
        "annotations": {split: n for split, (_, n) in written.items()},
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
