"""Detection transfer: fine-tune torchvision Faster / Mask R-CNN R-FPN from a backbone, COCO AP.

Inputs are RGB in [0, 1], ImageNet-normalised in the model, short side ``min_size``, long side at
most ``max_size``. Default: 12 epochs of the train images with boxes, lr ``0.02 * batch / 16``.
"""

from densessl.eval.detection.coco_eval import DetectionScores
from densessl.eval.detection.dataset import CocoDetection, open_coco
from densessl.eval.detection.finetune import finetune_detector
from densessl.eval.detection.model import (
    HeadWidths,
    build_detector,
    has_v2_heads,
    load_extra_state,
)
from densessl.eval.detection.options import DetectOptions
from densessl.eval.detection.synthetic_coco import write_synthetic_coco
from densessl.eval.detection.train import learning_rate
from densessl.eval.detection.weights import HEAD_PREFIXES, load_detection_weights

__all__ = [
    "HEAD_PREFIXES",
    "CocoDetection",
    "DetectOptions",
    "DetectionScores",
    "HeadWidths",
    "build_detector",
    "finetune_detector",
    "has_v2_heads",
    "learning_rate",
    "load_detection_weights",
    "load_extra_state",
    "open_coco",
    "write_synthetic_coco",
]
