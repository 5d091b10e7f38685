"""Labelled semantic-segmentation datasets: public layouts, a generic one, built-in scenes.

Every dataset yields ``(RGB PIL image, (H, W) int64 labels)`` with classes ``0..C-1`` and the
ignore label 255 (:data:`IGNORE_INDEX`), whatever the layout stores on disk. One file per layout
(``DIR`` = the root passed to :func:`open_segmentation`), each registered in
``densessl.registry.SEG_LAYOUTS``:

* ``camvid``: ``DIR/<split>/`` + ``DIR/<split>annot/``, 11 classes;
* ``voc``: PASCAL VOC 2012, 21 classes;
* ``ade20k``: ADEChallengeData2016, 150 classes;
* ``cityscapes``: ``leftImg8bit`` + ``gtFine``, the 19 train ids;
* ``folders``: ``DIR/<split>/{images,masks}`` + ``DIR/classes.txt``.

:class:`SyntheticSegmentation` is the built-in scenes, in memory or written to disk.
"""

# Each layout module registers itself in SEG_LAYOUTS when imported; the order is irrelevant.
from densessl.eval.segmentation import ade20k, camvid, cityscapes, folders, voc  # noqa: F401
from densessl.eval.segmentation.ade20k import ADE20K_CLASSES
from densessl.eval.segmentation.base import IGNORE_INDEX, SegLayout, SegmentationDataset
from densessl.eval.segmentation.camvid import CAMVID_CLASSES
from densessl.eval.segmentation.open import detect_format, layout_names, open_segmentation
from densessl.eval.segmentation.synthetic import (
    SyntheticSegmentation,
    write_synthetic_segmentation,
)
from densessl.eval.segmentation.voc import VOC_CLASSES

LAYOUTS = tuple(layout_names())

__all__ = [
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "IGNORE_INDEX",
    "LAYOUTS",
    "VOC_CLASSES",
    "SegLayout",
    "SegmentationDataset",
    "SyntheticSegmentation",
    "detect_format",
    "layout_names",
    "open_segmentation",
    "write_synthetic_segmentation",
]
