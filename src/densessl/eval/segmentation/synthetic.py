"""The built-in scenes as a segmentation set: in memory, or written to disk as ``folders``
(opened by :func:`~densessl.eval.segmentation.open_segmentation` through its manifest).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from densessl.data.built_in import DEFAULT_SCENES, built_in_scenes
from densessl.data.synthetic import SyntheticScenes
from densessl.eval.scene_export import MANIFEST_NAME, SPLITS, begin_scene_export
from densessl.eval.segmentation.base import IGNORE_INDEX
from densessl.eval.segmentation.folders import CLASS_LIST_NAME
from densessl.progress import progress


class SyntheticSegmentation:
    """The built-in scenes as a segmentation dataset, in memory (class 0, background, is scored).

    Args:
        seed: scene seed (:func:`~densessl.eval.scene_export.held_out_seed` for held-out sets).
        scenes: which built-in scene set (:mod:`densessl.data.built_in`).
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        num_images: int,
        image_size: int | tuple[int, int],
        seed: int,
        scenes: str = DEFAULT_SCENES,
    ) -> None:
        self.scenes = built_in_scenes(scenes, num_images, image_size, seed)
        self.class_names = list(self.scenes.class_names)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"scene {i} out of range 0..{len(self) - 1}")
        scene = self.scenes.scene(i)
        return Image.fromarray(scene.image, mode="RGB"), scene.mask

    def describe(self, i: int) -> str:
        return self.scenes.describe(i)


def _prepare_split(out: Path, split: str) -> tuple[Path, Path]:
    """Create ``out/<split>/{images,masks}``, dropping PNGs of an earlier, larger export."""
    folders = out / split / "images", out / split / "masks"
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
    return folders


def write_synthetic_segmentation(
    out: str | Path, num_images: int = 200, image_size: int = 128, seed: int = 0
) -> Path:
    """Render the built-in scenes into ``out`` as a ``folders`` dataset with a manifest.

    Writes ``out/train/{images,masks}/<index>.png``, ``out/val/...`` (``max(1, num_images //
    4)`` held-out scenes), ``classes.txt`` and ``densessl_dataset.json``: (S, S, 3) RGB images,
    (S, S) 8-bit masks of class ids (0 = background), S = ``image_size``. An earlier export is
    replaced; returns ``out`` as a Path.

    Raises:
        DataError: ``out`` is a file, or a folder holding files other than an earlier export's.
    """
    plan = begin_scene_export(out, num_images, image_size, seed, {CLASS_LIST_NAME})
    out, counts, seeds, digits = plan.out, plan.counts, plan.seeds, plan.digits
    with progress(total=sum(counts.values()), desc=f"writing {out}", unit="scene") as bar:
        for split in SPLITS:
            image_dir, mask_dir = _prepare_split(out, split)
            scenes = SyntheticScenes(counts[split], image_size, seeds[split])
            for i in range(counts[split]):
                scene = scenes.scene(i)
                name = f"{i:0{digits}d}.png"
                Image.fromarray(scene.image, mode="RGB").save(image_dir / name)
                Image.fromarray(scene.mask.astype(np.uint8), mode="L").save(mask_dir / name)
                bar.update()
    class_names = list(SyntheticScenes.class_names)
    (out / CLASS_LIST_NAME).write_text("\n".join(class_names) + "\n", encoding="utf-8")
    manifest = {
        "format": "folders",
        "task": "segmentation",
        "classes": class_names,
        "ignore_index": IGNORE_INDEX,
        "splits": list(SPLITS),
        "source": "densessl synthetic scenes",
        "seed": seed,
        "val_seed": seeds["val"],
        "image_size": image_size,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
