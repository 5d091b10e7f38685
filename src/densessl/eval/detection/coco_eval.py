"""COCO scoring of a fine-tuned detector: its detections as COCO results, COCOeval AP in
percent. Under a process group each rank predicts its share; COCOeval runs on the gathered set.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval
from torch import nn

from densessl import dist
from densessl.eval.detection.dataset import CocoDetection, detection_loader
from densessl.progress import progress

MASK_THRESHOLD = 0.5  # on Mask R-CNN's per-pixel probabilities, as torchvision's references


@dataclass
class DetectionScores:
    """COCO AP of a fine-tuned detector, in percent (NaN only if COCOeval had nothing to score).

    Attributes:
        box_ap, box_ap50, box_ap75: box AP at IoU 0.5:0.95, 0.5 and 0.75.
        box_ap_per_class: box AP at IoU 0.5:0.95 per category name (NaN: no ground truth).
        mask_ap, mask_ap50, mask_ap75: the same for masks; None for Faster R-CNN.
        extra_keys_used: ``extra_state`` keys loaded into the detector.
    """

    box_ap: float
    box_ap50: float
    box_ap75: float
    mask_ap: float | None = None
    mask_ap50: float | None = None
    mask_ap75: float | None = None
    iterations: int = 0
    extra_keys_used: list[str] = field(default_factory=list)
    heads: str = "v1"
    box_ap_per_class: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe scores rounded to 4 decimals; NaN becomes None (null)."""
        out = asdict(self)
        out["box_ap_per_class"] = {k: _json_safe(v) for k, v in self.box_ap_per_class.items()}
        return {key: _json_safe(value) for key, value in out.items()}

    def format_table(self, title: str = "detection (COCO AP, %)") -> str:
        """A plain-text table: AP, AP50, AP75 for boxes (and masks)."""
        kinds = [("box", (self.box_ap, self.box_ap50, self.box_ap75))]
        if self.mask_ap is not None:
            kinds.append(("mask", (self.mask_ap, self.mask_ap50, self.mask_ap75)))
        rule = "-" * 32
        lines = [title, rule, f"{'':<6}{'AP':>8} {'AP50':>8} {'AP75':>8}", rule]
        for kind, values in kinds:
            lines.append(f"{kind:<6}" + " ".join(f"{v:>8.2f}" for v in values))
        lines.append(rule)
        lines += [f"{name:<14}{ap:>8.2f}" for name, ap in self.box_ap_per_class.items()]
        lines += [rule, f"after {self.iterations} iterations"]
        lines.append(f"{self.heads} heads, {len(self.extra_keys_used)} pretrained tensors loaded")
        return "\n".join(lines)


def _detections(output: dict, image_id: int, category_ids: list[int]) -> tuple[list, list]:
    """One image's detections as COCO results: (box results, mask results)."""
    boxes = output["boxes"].cpu()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    scores, labels = output["scores"].cpu().tolist(), output["labels"].cpu().tolist()
    common = [
        {"image_id": image_id, "category_id": category_ids[label - 1], "score": score}
        for label, score in zip(labels, scores, strict=True)
    ]
    box_results = [{**c, "bbox": box} for c, box in zip(common, boxes.tolist(), strict=True)]
    if "masks" not in output or not common:
        return box_results, []
    binary = (output["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    mask_results = [
        {**c, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}}
        for c, rle in zip(common, rles, strict=True)
    ]
    return box_results, mask_results


@torch.no_grad()
def predict(
    detector: nn.Module, dataset: CocoDetection, batch_size: int, device: torch.device, workers: int
) -> tuple[list, list]:
    """COCO results of this rank's share of ``dataset``, gathered from every rank."""
    detector.eval()
    rank, world = dist.rank(), dist.world_size()
    mine = list(range(rank, len(dataset), world))
    batches = [mine[k : k + batch_size] for k in range(0, len(mine), batch_size)]
    box_results, mask_results = [], []
    bar = progress(None, "detection eval", len(mine), "img")
    for images, targets in detection_loader(dataset, batches, workers, device):
        outputs = detector([x.to(device, non_blocking=True) for x in images])
        for output, target in zip(outputs, targets, strict=True):
            boxes, masks = _detections(output, target["image_id"], dataset.category_ids)
            box_results += boxes
            mask_results += masks
        bar.update(len(images))
    bar.close()
    gathered = dist.all_gather_objects((box_results, mask_results))
    return [r for b, _ in gathered for r in b], [r for _, m in gathered for r in m]


def _json_safe(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def coco_ap(
    dataset: CocoDetection, results: list[dict], iou_type: str
) -> tuple[float, float, float, dict[str, float]]:
    """(AP, AP50, AP75, {category name: AP}) in percent of ``results`` against ``dataset.coco``;
    0 if empty. Per category: precision averaged over IoU 0.5:0.95 and recall (NaN without
    ground truth)."""
    names = {c: dataset.coco.cats[c]["name"] for c in dataset.category_ids}
    if not results:  # loadRes cannot take an empty list; nothing detected scores 0
        return 0.0, 0.0, 0.0, {name: 0.0 for name in names.values()}
    # pycocotools reports progress with print(); keep the console for our own bars.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: (IoU thresholds, recall points, categories, area ranges, max detections)
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        scored = precision[:, :, k][precision[:, :, k] > -1]  # -1: nothing to score
        per_class[names[category]] = 100.0 * float(scored.mean()) if scored.size else math.nan
    # COCOeval writes -1 when nothing was scoreable.
    ap = tuple(100.0 * float(v) if v >= 0 else math.nan for v in evaluator.stats[:3])
    return (*ap, per_class)
