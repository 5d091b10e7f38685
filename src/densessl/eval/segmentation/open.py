"""Open a labelled segmentation folder: its layout looked up in ``SEG_LAYOUTS`` by name, named
by the folder's manifest, or sniffed from its folders."""

from __future__ import annotations

import json
from pathlib import Path

from densessl.errors import DataError
from densessl.eval.scene_export import MANIFEST_NAME
from densessl.eval.segmentation.base import SegmentationDataset
from densessl.registry import SEG_LAYOUTS


def layout_names() -> list[str]:
    """The registered layouts in sniffing order (see ``SegLayout.priority``)."""
    return sorted(SEG_LAYOUTS.names(), key=lambda name: SEG_LAYOUTS.get(name).priority)


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


def _need_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}; pass an existing dataset folder")


def detect_format(root: str | Path) -> str:
    """The layout of a dataset folder: named by its manifest, else sniffed from its folders;
    :class:`DataError` if missing or no registered layout matches."""
    root = Path(root)
    _need_root(root)
    named = _format_from_manifest(root)
    if named is not None:
        return named
    names = layout_names()
    for name in names:
        if SEG_LAYOUTS.get(name).matches(root):
            return name
    hints = ", ".join(f"{name} ({SEG_LAYOUTS.get(name).hint})" for name in names)
    raise DataError(
        f"cannot tell the dataset layout of {root}; accepted layouts: {hints}; "
        f"arrange it so or pass --format ({'|'.join(names)})"
    )


def open_segmentation(
    root: str | Path, format: str | None = None, split: str = "train"
) -> SegmentationDataset:
    """Open a labelled segmentation dataset of any registered layout (``format``, a
    :func:`layout_names` name; None detects it, :func:`detect_format`). Its labels are (H, W)
    int64 in ``[0, num_classes)`` or 255. DataError for an unknown format, missing folder or
    label, empty split, undetectable layout."""
    root = Path(root)
    _need_root(root)
    layout = (format or detect_format(root)).lower()
    if layout not in SEG_LAYOUTS:
        raise DataError(
            f"unknown segmentation format '{layout}' for {root}; "
            f"use one of {', '.join(layout_names())}"
        )
    return SEG_LAYOUTS.get(layout).open(root, split)
