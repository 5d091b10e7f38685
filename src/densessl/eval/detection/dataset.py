"""COCO-format detection datasets: any instances JSON with its images, as torchvision samples.

Layouts accepted by :func:`open_coco`: ``DIR/<split>/images/`` + ``DIR/<split>/annotations.json``
(as ``write_synthetic_coco`` writes), or COCO 2017's ``DIR/annotations/instances_<split>2017.json``
with images in ``DIR/images/<split>2017/`` or ``DIR/<split>2017/``. Category ids become labels
``1..C`` in ascending id order (0 background); crowds and empty boxes are left out of the targets,
not out of ``.coco``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools.coco import COCO

from densessl.data.sources import to_rgb
from densessl.errors import DataError

ANNOTATIONS_NAME = "annotations.json"


def _quiet_coco(annotation_file: Path) -> COCO:
    """Load an instances JSON without pycocotools' "loading annotations..." prints."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise DataError(
            f"cannot read COCO annotations {annotation_file} ({type(error).__name__}: {error}); "
            "pass a COCO instances JSON with images, annotations and categories"
        ) from error


def _visible_box(annotation: dict, width: int, height: int) -> list[float] | None:
    """The annotation's xywh box as xyxy clipped to the image, or None if nothing is left."""
    x, y, w, h = annotation["bbox"]
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return [x0, y0, x1, y1] if x1 > x0 and y1 > y0 else None


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format instances JSON with its image folder, as torchvision detection samples.

    Args:
        with_masks: also return instance masks (Mask R-CNN); needs ``segmentation`` fields.

    Attributes:
        coco: the pycocotools ``COCO`` index (ground truth for COCOeval).
        category_ids: COCO category id of each contiguous label ``1..C`` (at index label - 1).
        class_names: ``["background", <name of label 1>, ...]``, ``num_classes`` (C + 1) entries.
    """

    def __init__(
        self, images_dir: str | Path, annotation_file: str | Path, with_masks: bool = False
    ) -> None:
        self.images_dir = Path(images_dir)
        annotation_file = Path(annotation_file)
        if not annotation_file.is_file():
            raise DataError(f"COCO annotations not found: {annotation_file}; pass an existing file")
        if not self.images_dir.is_dir():
            raise DataError(
                f"COCO image folder not found: {self.images_dir}; put the images of "
                f"{annotation_file.name} there"
            )
        self.with_masks = with_masks
        self.coco = _quiet_coco(annotation_file)
        self.category_ids: list[int] = sorted(self.coco.getCatIds())
        if not self.category_ids:
            raise DataError(f"{annotation_file} defines no categories; add a 'categories' list")
        self.class_names = ["background", *(self.coco.cats[c]["name"] for c in self.category_ids)]
        self.num_classes = len(self.class_names)
        self._label_of = {cat: k + 1 for k, cat in enumerate(self.category_ids)}
        self.image_ids: list[int] = sorted(self.coco.getImgIds())
        # Kept (annotation, xyxy box) pairs per sample, decided once: the rule needs no pixels.
        self._kept = [self._keep(image_id) for image_id in self.image_ids]

    def _keep(self, image_id: int) -> list[tuple[dict, list[float]]]:
        info = self.coco.imgs[image_id]
        kept = []
        for annotation in self.coco.imgToAnns.get(image_id, []):
            if annotation.get("iscrowd", 0) or annotation["category_id"] not in self._label_of:
                continue
            box = _visible_box(annotation, info["width"], info["height"])
            if box is not None:
                kept.append((annotation, box))
        return kept

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, indices: list[int]) -> CocoDetection:
        """The images ``indices`` only (a few-label split); the annotations stay shared."""
        part = copy.copy(self)
        part.image_ids = [self.image_ids[i] for i in indices]
        part._kept = [self._kept[i] for i in indices]
        return part

    def num_boxes(self, i: int) -> int:
        """How many boxes sample ``i``'s target holds (0 for an image with nothing kept)."""
        return len(self._kept[i])

    def describe(self, i: int) -> str:
        return str(self.images_dir / self.coco.imgs[self.image_ids[i]]["file_name"])

    def _read_image(self, info: dict) -> Image.Image:
        path = self.images_dir / info["file_name"]
        expected = (info["width"], info["height"])
        try:
            with Image.open(path) as image:
                image.load()
                # Annotations are drawn on the stored pixels; only when the JSON gives the size
                # of the EXIF-rotated photo was it annotated upright, as a viewer shows it.
                if image.size == expected:
                    return to_rgb(image)
                upright = ImageOps.exif_transpose(image)
                if upright.size == expected:
                    return to_rgb(upright)
                stored = image.size
        except Exception as error:  # any decoder failure: the user must fix the file
            raise DataError(
                f"cannot read COCO image {path} ({type(error).__name__}); restore the file or "
                "drop it from the annotations"
            ) from error
        raise DataError(
            f"COCO image {path} is {stored[0]}x{stored[1]} but its annotations say "
            f"{expected[0]}x{expected[1]}; fix the image or its width/height"
        )

    def _masks(self, kept: list[tuple[dict, list[float]]], info: dict) -> torch.Tensor:
        masks = np.zeros((len(kept), info["height"], info["width"]), dtype=np.uint8)
        for row, (annotation, _) in enumerate(kept):
            if not annotation.get("segmentation"):
                raise DataError(
                    f"annotation {annotation['id']} of {info['file_name']} has no segmentation; "
                    "use a box-only model (faster_rcnn) or add masks"
                )
            masks[row] = self.coco.annToMask(annotation)
        return torch.from_numpy(masks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        """Sample ``i``: ``image`` (3, H, W) float32 RGB in [0, 1] and ``target`` ``{"boxes":
        (M, 4) float32 xyxy pixels, "labels": (M,) int64 in 1..C, "image_id": int}``, plus
        ``"masks": (M, H, W) uint8`` (0/1) when ``with_masks``."""
        image_id = self.image_ids[i]
        info = self.coco.imgs[image_id]
        pixels = np.asarray(self._read_image(info), dtype=np.uint8)
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)
        kept = self._kept[i]
        boxes = torch.tensor([box for _, box in kept], dtype=torch.float32).reshape(-1, 4)
        labels = [self._label_of[annotation["category_id"]] for annotation, _ in kept]
        target = {
            "boxes": boxes,
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": int(image_id),
        }
        if self.with_masks:
            target["masks"] = self._masks(kept, info)
        return image, target


def open_coco(root: str | Path, split: str = "train", with_masks: bool = False) -> CocoDetection:
    """Open split ``split`` of a COCO-format dataset folder (layouts in the module docstring);
    :class:`DataError` if missing or neither layout."""
    root = Path(root)
    hint = (
        f"expected {split}/{ANNOTATIONS_NAME} + {split}/images/ or "
        f"annotations/instances_{split}2017.json + images/{split}2017/ (or {split}2017/)"
    )
    if not root.is_dir():
        raise DataError(f"COCO dataset folder not found: {root}; {hint}")
    own = root / split / ANNOTATIONS_NAME
    if own.is_file():
        return CocoDetection(root / split / "images", own, with_masks)
    official = root / "annotations" / f"instances_{split}2017.json"
    if official.is_file():
        nested = root / "images" / f"{split}2017"
        images = nested if nested.is_dir() else root / f"{split}2017"
        return CocoDetection(images, official, with_masks)
    raise DataError(f"no COCO annotations for split '{split}' in {root}; {hint}")


def _as_lists(samples: list) -> tuple[list, list]:
    images, targets = zip(*samples, strict=True)
    return list(images), list(targets)


def detection_loader(
    dataset: CocoDetection, batches: Iterable[list[int]], workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` as (list of (3, H, W) images, list of targets): sizes differ."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=_as_lists,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
