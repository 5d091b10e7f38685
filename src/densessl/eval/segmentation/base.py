"""What every segmentation dataset is, and what a layout registers.

Every dataset yields ``(RGB PIL image, (H, W) int64 labels)`` with classes ``0..C-1`` and the
ignore label :data:`IGNORE_INDEX` (255), whatever the layout stores on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

IGNORE_INDEX = 255


@runtime_checkable
class SegmentationDataset(Protocol):
    """A finite, indexable set of images with per-pixel class labels: ``num_classes`` scored
    classes named ``class_names``, unscored pixels ``ignore_index`` (255)."""

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


@dataclass(frozen=True)
class SegLayout:
    """A folder layout of a labelled dataset, as registered in ``SEG_LAYOUTS``.

    Attributes:
        open: ``open(root, split)`` -> the split's dataset; DataError when it is not there.
        matches: ``matches(root)``: whether the folder looks like this layout.
        priority: sniffing order, ascending, so the more specific layout wins.
    """

    open: Callable[[Path, str], SegmentationDataset]
    matches: Callable[[Path], bool]
    hint: str
    priority: int
