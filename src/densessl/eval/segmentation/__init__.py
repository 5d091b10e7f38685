"""Labelled semantic-segmentation datasets: public layouts, a generic one, built-in scenes.

Datasets follow :mod:`.base`; layouts (``DIR`` = the root of :func:`open_segmentation`,
registered in ``densessl.registry.SEG_LAYOUTS``): ``camvid`` (``DIR/<split>/`` +
``DIR/<split>annot/``, 11 classes), ``voc`` (VOC 2012, 21), ``ade20k`` (ADEChallengeData2016,
150), ``cityscapes`` (``leftImg8bit`` + ``gtFine``, 19 train ids), ``folders``
(``DIR/<split>/{images,masks}`` + ``DIR/classes.txt``). :class:`SyntheticSegmentation` is the
built-in scenes.
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
