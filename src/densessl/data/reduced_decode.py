"""JPEG decoding at reduced size when every crop of the image will be down-sampled anyway.

A JPEG decodes at 1/s, s in 2, 4, 8 (PIL's ``Image.draft``); pixel ``u`` covers source pixels
``[s u, s (u + 1))``, so crop box ``(x0, y0, x1, y1)`` becomes ``(x0 / s, ..., y1 / s)`` exactly.
``s`` is the largest keeping every reduced crop at least its output size (no up-sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from densessl.data.sources import (
    ImageFolder,
    ImageSource,
    UnreadableImage,
    require_regular_file,
    to_rgb,
)

DCT_SCALES = (8, 4, 2, 1)
_EXIF_ORIENTATION = 0x0112


def decode_scale(
    crop_sizes: Sequence[tuple[float, float]], output_sizes: Sequence[tuple[int, int]]
) -> int:
    """The largest DCT scale s (8, 4, 2 or 1) with ``crop / s >= output`` for every view, from
    (height, width) ``crop_sizes`` in source pixels and ``output_sizes`` of the views."""
    room = min(
        min(ch / oh, cw / ow) for (ch, cw), (oh, ow) in zip(crop_sizes, output_sizes, strict=True)
    )
    return next((s for s in DCT_SCALES if room >= s), 1)  # room < 1: up-sampled anyway


class DeferredJpeg:
    """A JPEG file whose header is read and whose pixels are decoded later, at a chosen scale;
    ``size`` is the full image's (width, height), as PIL's."""

    def __init__(self, path: str | Path, size: tuple[int, int]) -> None:
        self.path = str(path)
        self.size = size

    @classmethod
    def open(cls, path: str | Path) -> DeferredJpeg | None:
        """The deferred file, or None when reduced decoding does not apply: not a JPEG, an
        EXIF-rotated photo, an unreadable header, or not a regular file."""
        try:
            require_regular_file(path)
            with Image.open(path) as image:
                if image.format != "JPEG":
                    return None
                if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    return None
                return cls(path, image.size)
        except Exception:  # the full-decode path names the problem
            return None

    def decode(self, scale: int) -> Image.Image:
        """The image decoded at 1/``scale`` (size ``ceil(W / scale) x ceil(H / scale)``), RGB;
        :class:`UnreadableImage` if the pixels cannot be decoded."""
        try:
            with Image.open(self.path) as image:
                if scale > 1:
                    width, height = self.size
                    _, box = image.draft(image.mode, (width // scale, height // scale))
                    if round(width / box[2]) != scale:  # PIL chose another scale: do not guess
                        raise RuntimeError(f"draft gave scale {width / box[2]}, not {scale}")
                image.load()
                return to_rgb(image)
        except Exception as error:
            reason = str(error) or type(error).__name__
            raise UnreadableImage(self.path, f"{type(error).__name__}: {reason}") from error


def open_deferred(source: ImageSource, i: int) -> DeferredJpeg | None:
    """The ``i``-th image of ``source`` with only its header read, or None when the source is
    not a folder with ``reduced_decode`` on or the file does not qualify."""
    if isinstance(source, ImageFolder) and source.reduced_decode:
        return DeferredJpeg.open(source.path(i))
    return None
