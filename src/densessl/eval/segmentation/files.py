"""Image files paired with label files: the dataset every on-disk layout opens as.

Images are read on their stored pixel grid (benchmarks annotate stored pixels); the EXIF
rotation is applied only when the label matches the rotated size and not the stored one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from densessl.data.sources import find_images, to_rgb
from densessl.errors import DataError
from densessl.eval.segmentation.base import IGNORE_INDEX

# Marks stored label values a layout does not define (they raise, rather than pass silently).
UNDEFINED = -1


def lookup_table(
    size: int, identity: int, ignored: Sequence[int] = (), default: int = UNDEFINED
) -> np.ndarray:
    """A table from stored label value to class: ``0..identity-1`` kept, ``ignored`` -> 255."""
    table = np.full(size, default, dtype=np.int64)
    table[:identity] = np.arange(identity)
    table[list(ignored)] = IGNORE_INDEX
    return table


def _value_ranges(lookup: np.ndarray) -> str:
    """The stored values a lookup table defines, as runs: ``"0..11, 255"``."""
    defined = np.flatnonzero(lookup != UNDEFINED)
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
        lookup: (V,) int64 class (or 255) of each stored label value; -1 marks undefined values.
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
        undefined = outside | (labels == UNDEFINED)
        if undefined.any():
            value = int(values[undefined][0])
            raise DataError(
                f"label {label_path} holds value {value}, undefined in the {self.layout} layout "
                f"(it stores {_value_ranges(self.lookup)}); check --format or fix the mask"
            )
        return labels

    def describe(self, i: int) -> str:
        return str(self.pairs[i][0])


def need_folder(folder: Path, what: str, fix: str) -> Path:
    """``folder``, or a DataError naming ``what`` is missing and how to ``fix`` it."""
    if not folder.is_dir():
        raise DataError(f"{what} not found: {folder}; {fix}")
    return folder


def subfolders(folder: Path) -> list[str]:
    """Names of the visible folders in ``folder``, sorted; [] when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def pair_by_name(
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


def images_in(folder: Path, split: str) -> list[Path]:
    """Every image under ``folder``; a DataError when split ``split`` holds none."""
    images = find_images(folder)
    if not images:
        raise DataError(
            f"split '{split}' is empty: no images in {folder}; add images or pick another --split"
        )
    return images
