"""Labelled semantic-segmentation datasets: common public layouts, a generic one, built-in scenes.

Every dataset yields ``(RGB PIL image, (H, W) int64 labels)`` with classes ``0..C-1`` and the
ignore label :data:`IGNORE_INDEX` (255), whatever the layout stores on disk. Layouts
(:data:`LAYOUTS`, ``DIR`` = the root passed to :func:`open_segmentation`):

* ``camvid``: ``DIR/<split>/`` images, labels of the same file name in ``DIR/<split>annot/``;
  11 classes, void (11) -> ignore.
* ``voc``: PASCAL VOC 2012, ``DIR/JPEGImages``, ``DIR/SegmentationClass`` (palette PNGs whose
  indices are class ids), ``DIR/ImageSets/Segmentation/<split>.txt``; DIR may also be a parent
  holding ``VOCdevkit/VOC2012`` or ``VOC2012``. 21 classes, 255 (boundaries) = ignore.
* ``ade20k``: ADEChallengeData2016, ``DIR/{images,annotations}/{training,validation}``;
  0 -> ignore, ``k`` -> ``k - 1``; split ``train`` means ``training``, ``val`` ``validation``.
* ``cityscapes``: ``DIR/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``DIR/gtFine/<split>/<city>/*_gtFine_labelIds.png``; label ids -> the 19 train ids, all else
  -> ignore.
* ``folders``: ``DIR/<split>/images/*`` with ``DIR/<split>/masks/<same stem>.png`` (pixel =
  class id, 255 = ignore) and ``DIR/classes.txt`` (line k names class k); ``DIR/images`` +
  ``DIR/masks`` are used when ``DIR/<split>`` does not exist.

Images are read on their stored pixel grid, not turned upright by their EXIF orientation,
because the benchmarks annotate stored pixels; only when the label matches the EXIF-rotated size
(and not the stored one) is the rotation applied, as an annotation tool showing the photo upright
would have drawn it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from densessl.data.sources import find_images, to_rgb
from densessl.data.synthetic import SyntheticScenes
from densessl.errors import DataError

IGNORE_INDEX = 255
LAYOUTS = ("camvid", "voc", "ade20k", "cityscapes", "folders")
MANIFEST_NAME = "densessl_dataset.json"
# Offset between a pretraining seed and the seed of held-out synthetic scenes: large, so that no
# plausible run seed draws the held-out scenes.
HELD_OUT_SEED_OFFSET = 1_000_003

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_VOID = 11
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
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
# Cityscapes label id -> train id, in train-id order; every other id is ignored.
CITYSCAPES_TRAIN_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23,
    "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
    "motorcycle": 32, "bicycle": 33,
}  # fmt: skip

# Marks stored label values a layout does not define (they raise, rather than pass silently).
_UNDEFINED = -1
_LAYOUT_HINT = (
    "camvid (DIR/<split> + DIR/<split>annot), voc (DIR/JPEGImages + DIR/SegmentationClass), "
    "ade20k (DIR/images + DIR/annotations), cityscapes (DIR/leftImg8bit + DIR/gtFine), "
    "folders (DIR/classes.txt + DIR/<split>/images + DIR/<split>/masks)"
)


@runtime_checkable
class SegmentationDataset(Protocol):
    """A finite, indexable set of images with per-pixel class labels.

    Attributes:
        num_classes: number of scored classes (the ignore label excluded).
        class_names: name of each class, ``num_classes`` of them.
        ignore_index: the label of unscored pixels, 255 everywhere.
    """

    num_classes: int
    class_names: list[str]
    ignore_index: int

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The ``i``-th RGB image and its (H, W) int64 labels in ``[0, num_classes)`` or 255."""
        ...

    def describe(self, i: int) -> str:
        """The ``i``-th image's file path, or ``"synthetic scene i"``."""
        ...


def held_out_seed(seed: int) -> int:
    """The seed of synthetic scenes held out from a pretraining run that used ``seed``."""
    return seed + HELD_OUT_SEED_OFFSET


class SyntheticSegmentation:
    """The built-in scenes as a segmentation dataset, in memory (class 0, background, is scored).

    Args:
        num_images: number of scenes.
        image_size: side, or (height, width), of every scene in pixels.
        seed: scene seed; pass :func:`held_out_seed` of the pretraining seed for held-out sets.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, num_images: int, image_size: int | tuple[int, int], seed: int) -> None:
        self.scenes = SyntheticScenes(num_images=num_images, image_size=image_size, seed=seed)
        self.class_names = list(SyntheticScenes.class_names)
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


def _lookup(
    size: int, identity: int, ignored: Sequence[int] = (), default: int = _UNDEFINED
) -> np.ndarray:
    """A table from stored label value to class: ``0..identity-1`` kept, ``ignored`` -> 255."""
    table = np.full(size, default, dtype=np.int64)
    table[:identity] = np.arange(identity)
    table[list(ignored)] = IGNORE_INDEX
    return table


def _value_ranges(lookup: np.ndarray) -> str:
    """The stored values a lookup table defines, as runs: ``"0..11, 255"``."""
    defined = np.flatnonzero(lookup != _UNDEFINED)
    runs = np.split(defined, np.flatnonzero(np.diff(defined) > 1) + 1)
    return ", ".join(f"{r[0]}..{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs if len(r))


def _read_label(path: Path) -> np.ndarray:
    """Stored label values of one mask file, (H, W) integers (palette PNGs give indices)."""
    try:
        with Image.open(path) as label:
            label.load()
            mode = label.mode
            values = np.asarray(label)
    except Exception as error:
        raise DataError(
            f"cannot read label {path} ({type(error).__name__}: {error}); replace the file"
        ) from error
    # Grey masks saved as RGB are common; equal channels lose nothing.
    if values.ndim == 3 and values.shape[2] == 3 and (values == values[..., :1]).all():
        values = values[..., 0]
    if values.ndim != 2 or not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise DataError(
            f"label {path} has {mode} pixels; save masks as single-channel (L or palette) PNGs "
            "whose pixel values are class ids"
        )
    return values


def _read_image(path: Path, size: tuple[int, int]) -> Image.Image:
    """One image as RGB on its stored pixel grid, EXIF-rotated only if that makes it ``size``."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.size != size:
                upright = ImageOps.exif_transpose(image)
                image = upright if upright.size == size else image
            return to_rgb(image)
    except Exception as error:
        raise DataError(
            f"cannot read image {path} ({type(error).__name__}: {error}); replace or remove it"
        ) from error


class FileSegmentation:
    """Image files paired with label files, labels remapped through a lookup table.

    Args:
        pairs: (image path, label path) of every sample, in order.
        class_names: name of each class.
        lookup: (V,) int64 class (or 255) of each stored label value; -1 marks undefined values.
        layout: layout name, for messages.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        class_names: Sequence[str],
        lookup: np.ndarray,
        layout: str,
    ) -> None:
        self.pairs = list(pairs)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.lookup = lookup
        self.layout = layout

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        image_path, label_path = self.pairs[i]
        stored = _read_label(label_path)
        height, width = stored.shape
        image = _read_image(image_path, (width, height))
        if image.size != (width, height):
            raise DataError(
                f"image {image_path} is {image.width}x{image.height} but its label {label_path} "
                f"is {width}x{height}; a label must have its image's size"
            )
        return image, self._remap(stored, label_path)

    def _remap(self, stored: np.ndarray, label_path: Path) -> np.ndarray:
        values = stored.astype(np.int64)
        outside = (values < 0) | (values >= len(self.lookup))
        labels = self.lookup[np.where(outside, 0, values)]
        undefined = outside | (labels == _UNDEFINED)
        if undefined.any():
            value = int(values[undefined][0])
            raise DataError(
                f"label {label_path} holds value {value}, undefined in the {self.layout} layout "
                f"(it stores {_value_ranges(self.lookup)}); check --format or fix the mask"
            )
        return labels

    def describe(self, i: int) -> str:
        return str(self.pairs[i][0])


def _need_folder(folder: Path, what: str, fix: str) -> Path:
    if not folder.is_dir():
        raise DataError(f"{what} not found: {folder}; {fix}")
    return folder


def _subfolders(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pair_by_name(
    images: Sequence[Path], image_root: Path, label_root: Path, label_name: Callable[[Path], str]
) -> list[tuple[Path, Path]]:
    """Pair each image with ``label_root / <relative folder> / label_name(image)``."""
    pairs = []
    for image in images:
        relative = image.relative_to(image_root).parent
        label = label_root / relative / label_name(image)
        if not label.is_file():
            raise DataError(
                f"no label for image {image}: expected {label}; add the label or remove the image"
            )
        pairs.append((image, label))
    return pairs


def _images_in(folder: Path, split: str) -> list[Path]:
    images = find_images(folder)
    if not images:
        raise DataError(
            f"split '{split}' is empty: no images in {folder}; add images or pick another --split"
        )
    return images


def _camvid_label_name(image: Path) -> str:
    # SegNet's CamVid uses the image's own file name; accept a .png label for other formats.
    return image.name if (image.suffix.lower() == ".png") else image.stem + ".png"


def _open_camvid(root: Path, split: str) -> FileSegmentation:
    splits = [name for name in _subfolders(root) if (root / f"{name}annot").is_dir()]
    image_dir = _need_folder(
        root / split, f"camvid split '{split}'", f"splits found: {', '.join(splits) or 'none'}"
    )
    label_dir = _need_folder(
        root / f"{split}annot", "camvid label folder", f"put the labels of {image_dir} there"
    )
    pairs = _pair_by_name(_images_in(image_dir, split), image_dir, label_dir, _camvid_label_name)
    # 255 is accepted as ignore too: some CamVid copies store void that way.
    lookup = _lookup(256, len(CAMVID_CLASSES), ignored=(CAMVID_VOID, IGNORE_INDEX))
    return FileSegmentation(pairs, CAMVID_CLASSES, lookup, "camvid")


def _voc_root(root: Path) -> Path | None:
    for candidate in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def _open_voc(root: Path, split: str) -> FileSegmentation:
    voc = _voc_root(root)
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
    lookup = _lookup(256, len(VOC_CLASSES), ignored=(IGNORE_INDEX,))
    return FileSegmentation(pairs, VOC_CLASSES, lookup, "voc")


def _ade20k_root(root: Path) -> Path:
    nested = root / "ADEChallengeData2016"
    return nested if not (root / "images").is_dir() and nested.is_dir() else root


def _open_ade20k(root: Path, split: str) -> FileSegmentation:
    ade = _ade20k_root(root)
    folder = ADE20K_SPLITS.get(split, split)
    image_dir = _need_folder(
        ade / "images" / folder,
        f"ade20k split '{split}'",
        f"splits found: {', '.join(_subfolders(ade / 'images')) or 'none'}",
    )
    label_dir = _need_folder(
        ade / "annotations" / folder, "ade20k label folder", f"put the labels of {image_dir} there"
    )
    pairs = _pair_by_name(
        _images_in(image_dir, split), image_dir, label_dir, lambda p: p.stem + ".png"
    )
    # Stored 0 is "other" (unscored); the 150 classes are stored as 1..150.
    lookup = np.full(256, _UNDEFINED, dtype=np.int64)
    lookup[0] = IGNORE_INDEX
    lookup[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES))
    return FileSegmentation(pairs, ADE20K_CLASSES, lookup, "ade20k")


def _open_cityscapes(root: Path, split: str) -> FileSegmentation:
    image_dir = _need_folder(
        root / "leftImg8bit" / split,
        f"cityscapes split '{split}'",
        f"splits found: {', '.join(_subfolders(root / 'leftImg8bit')) or 'none'}",
    )
    label_dir = _need_folder(
        root / "gtFine" / split, "cityscapes label folder", "unpack gtFine_trainvaltest there"
    )
    images = [p for p in _images_in(image_dir, split) if p.name.endswith("_leftImg8bit.png")]
    if not images:
        raise DataError(
            f"split '{split}' is empty: no *_leftImg8bit.png under {image_dir}; "
            "unpack leftImg8bit_trainvaltest there"
        )
    pairs = _pair_by_name(
        images,
        image_dir,
        label_dir,
        lambda p: p.name.removesuffix("_leftImg8bit.png") + "_gtFine_labelIds.png",
    )
    lookup = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lookup[list(CITYSCAPES_TRAIN_IDS.values())] = np.arange(len(CITYSCAPES_TRAIN_IDS))
    return FileSegmentation(pairs, list(CITYSCAPES_TRAIN_IDS), lookup, "cityscapes")


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


def _open_folders(root: Path, split: str) -> FileSegmentation:
    base = root / split if (root / split).is_dir() else root
    fix = f"expected {root}/<split>/images and .../masks, or {root}/images and {root}/masks"
    image_dir = _need_folder(base / "images", f"images folder of split '{split}'", fix)
    mask_dir = _need_folder(base / "masks", f"masks folder of split '{split}'", fix)
    names = _read_class_list(root / "classes.txt")
    pairs = _pair_by_name(
        _images_in(image_dir, split), image_dir, mask_dir, lambda p: p.stem + ".png"
    )
    lookup = _lookup(256, len(names), ignored=(IGNORE_INDEX,))
    return FileSegmentation(pairs, names, lookup, "folders")


_OPENERS: dict[str, Callable[[Path, str], FileSegmentation]] = {
    "camvid": _open_camvid,
    "voc": _open_voc,
    "ade20k": _open_ade20k,
    "cityscapes": _open_cityscapes,
    "folders": _open_folders,
}


def _format_from_manifest(root: Path) -> str | None:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        layout = json.loads(manifest.read_text(encoding="utf-8"))["format"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"cannot read the format from {manifest} ({error}); fix or delete the file"
        ) from error
    return str(layout)


def detect_format(root: str | Path) -> str:
    """The layout of a dataset folder: named by its manifest, else sniffed from its folders.

    Raises:
        DataError: the folder is missing or matches no layout in :data:`LAYOUTS`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}; pass an existing dataset folder")
    named = _format_from_manifest(root)
    if named is not None:
        return named
    children = set(_subfolders(root))
    if any(f"{name}annot" in children for name in children):
        return "camvid"
    if _voc_root(root) is not None:
        return "voc"
    ade = _ade20k_root(root)
    if (ade / "images").is_dir() and (ade / "annotations").is_dir():
        return "ade20k"
    if {"leftImg8bit", "gtFine"} <= children:
        return "cityscapes"
    if (root / "classes.txt").is_file():
        return "folders"
    raise DataError(
        f"cannot tell the dataset layout of {root}; accepted layouts: {_LAYOUT_HINT}; "
        f"arrange it so or pass --format ({'|'.join(LAYOUTS)})"
    )


def open_segmentation(
    root: str | Path, format: str | None = None, split: str = "train"
) -> SegmentationDataset:
    """Open a labelled segmentation dataset of any layout in :data:`LAYOUTS`.

    Args:
        root: the dataset folder.
        format: one of :data:`LAYOUTS`; None detects it (see :func:`detect_format`).
        split: which split, e.g. ``"train"`` or ``"val"``.

    Returns:
        The dataset; its labels are (H, W) int64 in ``[0, num_classes)`` or 255.

    Raises:
        DataError: unknown format, missing folder or label, empty split, undetectable layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}; pass an existing dataset folder")
    layout = (format or detect_format(root)).lower()
    if layout not in _OPENERS:
        raise DataError(
            f"unknown segmentation format '{layout}' for {root}; use one of {', '.join(LAYOUTS)}"
        )
    return _OPENERS[layout](root, split)
