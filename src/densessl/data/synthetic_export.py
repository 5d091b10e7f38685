"""Write the built-in scenes to disk as a labelled ``folders`` segmentation dataset.

The written folder opens with :func:`densessl.data.labeled.open_segmentation` without a format:
its ``densessl_dataset.json`` manifest names the layout. The ``val`` split is drawn from
:func:`densessl.data.labeled.held_out_seed` of ``seed``, so no val scene is a train scene, nor a
scene that pretraining on the built-in scenes with the same seed has seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from densessl.data.labeled import IGNORE_INDEX, MANIFEST_NAME, held_out_seed
from densessl.data.synthetic import SyntheticScenes
from densessl.errors import DataError

SPLITS = ("train", "val")


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
    """Check the arguments and the target folder, and plan the train / held-out val splits.

    The folder must be new, empty, or hold only ``own_names`` (what an earlier export of the same
    kind wrote). Its manifest is removed first (and written last by the caller), so that an
    interrupted export is not taken for a dataset.

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

    Writes ``out/train/{images,masks}/<index>.png`` (``num_images`` scenes of seed ``seed``),
    ``out/val/...`` (``max(1, num_images // 4)`` held-out scenes), ``out/classes.txt`` and
    ``out/densessl_dataset.json``. Images are (S, S, 3) RGB PNGs; masks (S, S) 8-bit PNGs whose
    pixel is the class id (0 = background). An earlier export in ``out`` is replaced.

    Args:
        out: the dataset folder to create.
        num_images: number of train scenes.
        image_size: side ``S`` of every scene in pixels.
        seed: seed of the train scenes.

    Returns:
        ``out`` as a Path.

    Raises:
        DataError: ``out`` is a file, or a folder holding files other than an earlier export's.
    """
    plan = begin_scene_export(out, num_images, image_size, seed, {"classes.txt"})
    out, counts, seeds, digits = plan.out, plan.counts, plan.seeds, plan.digits
    with tqdm(total=sum(counts.values()), desc=f"writing {out}", unit="scene") as bar:
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
    (out / "classes.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
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
