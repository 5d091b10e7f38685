"""The image files under a folder, listed once and reused while no folder in it changes.

Listing walks every folder (recursively, hidden entries skipped, symlinked folders followed,
each real folder once) and keeps names as strings relative to the root, sorted: a million
``Path`` objects would cost more than the walk. The listing is saved
(:mod:`densessl.data.index_cache`) with each walked folder's modification time. Adding,
removing or renaming an entry changes its folder's time, so a later run stats only the
folders (not the files) and reuses the names when every time matches. A listing made while a
folder was still changing (a time within ``SETTLE_SECONDS`` of the walk) is not saved: file
systems with coarse clocks could hide a change made in the same tick.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from densessl.data import index_cache

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SETTLE_SECONDS = 2.0


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def walk_images(root: str | Path) -> tuple[list[str], dict[str, int]]:
    """(sorted relative posix names of the image files under ``root``, {relative folder:
    modification time in ns} of every folder walked)."""
    root = os.fspath(root)
    names: list[str] = []
    folders: dict[str, int] = {}
    visited: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link loop, or a second link to a walked folder
            subfolders[:] = []
            continue
        visited.add(real)
        relative = os.path.relpath(folder, root)
        folders[relative] = os.stat(folder).st_mtime_ns
        subfolders[:] = sorted(d for d in subfolders if not _is_hidden(d))
        prefix = "" if relative == os.curdir else relative.replace(os.sep, "/") + "/"
        names.extend(
            prefix + name
            for name in files
            if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    names.sort()
    return names, folders


def _unchanged(root: str, folders: dict[str, int]) -> bool:
    for relative, stamp in folders.items():
        try:
            if os.stat(os.path.join(root, relative)).st_mtime_ns != stamp:
                return False
        except OSError:
            return False
    return True


def list_images(root: str | Path, cache: bool = True) -> list[str]:
    """Sorted relative names of the image files under ``root``, from the saved listing when no
    folder changed since it was made (``cache=False``: always walk, save nothing)."""
    root = os.path.realpath(root)
    if cache:
        saved = index_cache.read_listing("folder", root)
        if saved is not None and _unchanged(root, saved["folders"]):
            return saved["names"]
    started = time.time_ns()
    names, folders = walk_images(root)
    settled = started - int(SETTLE_SECONDS * 1e9)
    if cache and names and max(folders.values()) < settled:
        index_cache.write_listing("folder", root, {"folders": folders, "names": names})
    return names
