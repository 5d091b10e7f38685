"""Where images come from: a folder of image files, or anything with the same three methods.

Sources yield 8-bit RGB PIL images; undecodable files raise :class:`UnreadableImage` (skipped),
user mistakes :class:`DataError`. :func:`to_rgb`: grayscale replicated, other modes by PIL;
alpha composited on black (colour × alpha), so invisible pixels never count; 16-bit integers
divided by 257 and rounded; float ``F`` in [0, 1] scaled by 255, else min-max stretched; EXIF
orientation applied.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from densessl.data.folder_index import IMAGE_EXTENSIONS, list_images, walk_images
from densessl.errors import DataError


class UnreadableImage(Exception):
    """An image file (``path``) that could not be decoded, and the ``reason`` in words."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@runtime_checkable
class ImageSource(Protocol):
    """A finite, indexable collection of RGB images."""

    def __len__(self) -> int: ...

    def load_image(self, i: int) -> Image.Image:
        """The ``i``-th image as 8-bit RGB; raises :class:`UnreadableImage` if it cannot be."""
        ...

    def describe(self, i: int) -> str:
        """A short human-readable name of the ``i``-th image (a path, for files)."""
        ...


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (:func:`densessl.data.folder_index.walk_images`: recursive,
    hidden ones skipped, symlinked folders followed once), sorted by path relative to ``root``."""
    return [Path(root) / name for name in walk_images(root)[0]]


def _composite_on_black(image: Image.Image) -> Image.Image:
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
    return Image.fromarray(np.round(rgb).astype(np.uint8), mode="RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    integer = image.mode != "F"
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if integer and low >= 0 and high <= 65535:
        # 16-bit data (PIL opens some 16-bit files as "I" rather than "I;16").
        scaled = values / 257.0
    elif not integer and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    gray = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), mode="RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB (rules in the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "P" and "transparency" in image.info:
        return _composite_on_black(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_black(image)
    return image.convert("RGB")


def require_regular_file(path: str | Path) -> None:
    """Raise :class:`UnreadableImage` unless ``path`` is a regular file (after links): opening
    a FIFO blocks until something writes to it, and a device or socket is no image either."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UnreadableImage(path, f"{type(error).__name__}: {error.strerror}") from error
    if not stat.S_ISREG(mode):
        raise UnreadableImage(path, "not a regular file (a pipe, socket or device)")


def decode_rgb(file: str | Path | BinaryIO, name: str | Path) -> Image.Image:
    """Fully decode one image (a path or an open binary file) to 8-bit RGB; ``name`` is what
    errors call it.

    Raises:
        UnreadableImage: on any failure (empty, truncated, not an image, too large).
    """
    try:
        with Image.open(file) as image:
            # Decode now: PIL is lazy, and a truncated file only fails when pixels are read.
            # ImageFile.LOAD_TRUNCATED_IMAGES is left False so such files do fail.
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except Exception as error:  # any decoder failure means "skip this file"
        reason = (str(error) or type(error).__name__).replace(repr(file), f"'{name}'")
        raise UnreadableImage(name, f"{type(error).__name__}: {reason}") from error


def read_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert one file to 8-bit RGB.

    Raises:
        UnreadableImage: on any failure (missing, empty, truncated, not an image, too large,
            not a regular file).
    """
    require_regular_file(path)
    return decode_rgb(path, path)


class ImageFolder:
    """Every image file under a folder (recursive), in sorted path order; the listing is reused
    while the folder is unchanged (:mod:`densessl.data.folder_index`).

    Args:
        reduced_decode: offer JPEGs undecoded, for decoding at the size the crops allow
            (:func:`densessl.data.reduced_decode.open_deferred`).

    Raises:
        DataError: not a folder, or no images in it.
    """

    def __init__(self, root: str | Path, reduced_decode: bool = False) -> None:
        self.root = Path(root)
        self.reduced_decode = reduced_decode
        if not self.root.exists():
            raise DataError(
                f"data folder not found: {self.root}; pass --data an existing folder of images, "
                "or leave --data out to train on the built-in synthetic scenes"
            )
        if not self.root.is_dir():
            raise DataError(
                f"data path is not a folder: {self.root}; pass --data a folder of images "
                "(searched recursively) or tar shards (a .tar file, a pattern such as "
                "'train-{000000..000099}.tar', or a folder of .tar files)"
            )
        self.names = list_images(self.root)  # relative posix paths, as strings
        if not self.names:
            raise DataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}; put images "
                "there (subfolders and symlinked folders are searched) or leave --data out to "
                "use the synthetic scenes"
            )

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        """The ``i``-th image's file path."""
        return os.path.join(self.root, self.names[i])

    def key(self, i: int) -> str:
        """The ``i``-th image's stable name: its path relative to the folder."""
        return self.names[i]

    def load_image(self, i: int) -> Image.Image:
        return read_rgb(self.path(i))

    def describe(self, i: int) -> str:
        return self.path(i)
