"""What ``--data`` names: a folder of images, or tar shards.

Tar shards are named by a brace pattern (``shards/train-{000000..000099}.tar``, expanded by
WebDataset's rule), one ``.tar`` file, or a folder whose top level holds ``.tar`` files and
no images or subfolders. Anything else is a folder of images.
"""

from __future__ import annotations

import os
from pathlib import Path

from densessl.data.folder_index import IMAGE_EXTENSIONS
from densessl.data.sources import ImageFolder, ImageSource
from densessl.errors import DataError

_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def _expand(pattern: str) -> list[str]:
    from webdataset.shardlists import expand_urls

    return expand_urls(pattern)


def _shards_in_folder(folder: str) -> list[str] | None:
    with os.scandir(folder) as listing:
        entries = [e for e in listing if not e.name.startswith(".")]
    tars = sorted(e.path for e in entries if e.is_file() and e.name.endswith(".tar"))
    images = any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)
    folders = any(e.is_dir() for e in entries)
    return tars if tars and not images and not folders else None


def shard_files(spec: str | Path) -> list[str] | None:
    """The shard files ``spec`` names, in order, or None when it names a folder of images.

    Raises:
        DataError: compressed tars, or a pattern whose files are missing.
    """
    spec = os.fspath(spec)
    if spec.endswith(_COMPRESSED):
        raise DataError(
            f"{spec}: compressed tars cannot be read by index; unpack them to .tar, or write "
            "shards from a folder with: densessl data shards --data FOLDER --out DIR"
        )
    if "{" in spec:
        files = _expand(spec)
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise DataError(
                f"{len(missing)} of the {len(files)} shards of {spec} are missing (first: "
                f"{missing[0]}); check the pattern's range"
            )
        return files
    if spec.endswith(".tar") and os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        return _shards_in_folder(spec)
    return None


def open_image_source(spec: str | Path, reduced_decode: bool = False) -> ImageSource:
    """The images ``spec`` names: :class:`~densessl.data.tar_shards.TarShards` or
    :class:`~densessl.data.sources.ImageFolder` (``reduced_decode`` applies to folders)."""
    shards = shard_files(spec)
    if shards is None:
        return ImageFolder(spec, reduced_decode=reduced_decode)
    from densessl.data.tar_shards import TarShards

    return TarShards(shards)
