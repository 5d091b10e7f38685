"""The folder listing: sorted relative names, reused from the cache only while no folder in the
tree changed, and never saved while a folder is still changing."""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

import densessl.data.folder_index as folder_index
from densessl.data import index_cache
from densessl.data.folder_index import list_images
from densessl.data.sources import ImageFolder

HOUR_AGO = time.time() - 3600


def _image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path)


def _settle(root) -> None:
    """Date every folder an hour back, as a folder nobody is writing to."""
    for folder, _, _ in os.walk(root):
        os.utime(folder, (HOUR_AGO, HOUR_AGO))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSESSL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name in ("a.png", "a/b.png", "a-b.png", "B.png", "a/c/d.jpg", ".hidden.png", "x.txt"):
        _image(root / name) if name.endswith(("png", "jpg")) else (root / name).write_text("")
    _settle(root)
    return root


def test_names_are_the_image_paths_sorted_as_strings(tree):
    # '-' < '.' < '/' < 'B' < 'a' in code points: the order of the relative paths as strings
    assert list_images(tree) == ["B.png", "a-b.png", "a.png", "a/b.png", "a/c/d.jpg"]
    assert ImageFolder(tree).names == list_images(tree, cache=False)


def test_an_unchanged_tree_is_listed_from_the_cache(tree, monkeypatch):
    first = list_images(tree)
    monkeypatch.setattr(folder_index, "walk_images", lambda root: pytest.fail("walked again"))
    assert list_images(tree) == first


@pytest.mark.parametrize(
    "change",
    [
        lambda root: _image(root / "a" / "c" / "new.png"),  # a file added deep down
        lambda root: (root / "a" / "b.png").unlink(),  # a file removed
        lambda root: (root / "a" / "b.png").rename(root / "a" / "e.png"),  # renamed
        lambda root: _image(root / "a" / "f" / "g.png"),  # a new subfolder
    ],
)
def test_a_change_anywhere_in_the_tree_is_listed_again(tree, change):
    list_images(tree)
    change(tree)
    assert list_images(tree) == list_images(tree, cache=False)


def test_a_folder_still_changing_is_not_saved(tree):
    _image(tree / "a" / "just_now.png")  # its folder's time is now
    list_images(tree)
    assert index_cache.read_listing("folder", os.path.realpath(tree)) is None
    _settle(tree)
    list_images(tree)
    assert index_cache.read_listing("folder", os.path.realpath(tree)) is not None


def test_a_cache_that_cannot_be_written_is_skipped(tree, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("DENSESSL_CACHE_DIR", str(blocker / "cache"))
    assert list_images(tree) == list_images(tree, cache=False)
