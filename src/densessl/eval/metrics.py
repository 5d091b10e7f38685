"""Semantic-segmentation scores from a confusion matrix.

``IoU_c = TP / (TP + FP + FN)`` over all scored pixels of the set; a class absent from ground
truth and predictions is NaN and left out of the mean (mmsegmentation's rule). Pixels labelled
``ignore_index`` are not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over the scored pixels; batches' matrices add up.

    ``pred`` (...) classes in ``[0, C)``, any integer dtype; ``target`` the same shape, classes in
    ``[0, C)`` or ``ignore_index``. Returns (C, C) int64 on ``pred``'s device, ``[t, p]`` counting
    pixels of class t predicted p; ValueError for mismatched shapes or labels out of range.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.reshape(-1).to(device=pred.device, dtype=torch.int64)
    pred = pred.reshape(-1).to(torch.int64)
    scored = target != ignore_index
    target, pred = target[scored], pred[scored]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must be in [0, {num_classes}) or {ignore_index}")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must be in [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class SegmentationScores:
    """Scores of a segmentation, in percent (IoU rule in the module docstring).

    Attributes:
        miou: mean IoU over the classes present in the ground truth or the predictions.
        per_class_iou: class name -> IoU, NaN for classes absent from both.
        confusion: (C, C) int64 on the CPU, rows = ground truth.
    """

    miou: float
    per_class_iou: dict[str, float]
    pixel_accuracy: float
    confusion: torch.Tensor

    @classmethod
    def from_confusion(
        cls, confusion: torch.Tensor, class_names: list[str] | tuple[str, ...]
    ) -> SegmentationScores:
        """Scores of a (C, C) confusion matrix (rows = ground truth) with C class names."""
        confusion = confusion.detach().to("cpu", torch.int64)
        if confusion.shape != (len(class_names), len(class_names)):
            raise ValueError(f"confusion {tuple(confusion.shape)} vs {len(class_names)} classes")
        true_positive = confusion.diag().double()
        union = confusion.sum(0).double() + confusion.sum(1).double() - true_positive
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan) * 100
        present = union > 0
        miou = float(iou[present].mean()) if present.any() else math.nan
        total = int(confusion.sum())
        accuracy = 100.0 * float(true_positive.sum()) / total if total else math.nan
        per_class = {name: float(v) for name, v in zip(class_names, iou, strict=True)}
        return cls(miou, per_class, accuracy, confusion)

    def to_dict(self) -> dict:
        """JSON-safe scores: NaN becomes None (null); the confusion matrix is left out."""
        return {
            "miou": _json_float(self.miou),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "per_class_iou": {k: _json_float(v) for k, v in self.per_class_iou.items()},
            "scored_pixels": int(self.confusion.sum()),
        }

    def format_table(self, title: str) -> str:
        """A plain-text table: one row per class, then mIoU and pixel accuracy."""
        width = max([len("pixel accuracy"), *(len(n) for n in self.per_class_iou)])
        rule = "-" * (width + 10)
        lines = [title, rule, f"{'class':<{width}}  {'IoU (%)':>8}", rule]
        for name, value in self.per_class_iou.items():
            lines.append(f"{name:<{width}}  {_format_percent(value, 'absent'):>8}")
        lines += [
            rule,
            f"{'mIoU':<{width}}  {_format_percent(self.miou):>8}",
            f"{'pixel accuracy':<{width}}  {_format_percent(self.pixel_accuracy):>8}",
        ]
        return "\n".join(lines)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _format_percent(value: float, missing: str = "n/a") -> str:
    return missing if math.isnan(value) else f"{value:.2f}"
