"""Detection transfer: fine-tune torchvision Faster / Mask R-CNN R-FPN from a backbone, COCO AP.

One concept per file:

* :mod:`.dataset`: COCO-format datasets (any instances JSON) as torchvision samples;
* :mod:`.synthetic_coco`: the built-in scenes written as such a dataset;
* :mod:`.model`: the detector (trunk from the backbone, v1 / v2 heads, norms) and loading
  pretrained FPN / head weights into it;
* :mod:`.weights`: what ``--weights`` starts from (trunk plus pretrained heads, when any);
* :mod:`.train`: the fine-tune loop and detectron2's 1x recipe (lr schedule, parameter groups);
* :mod:`.coco_eval`: detections as COCO results and COCOeval AP;
* :mod:`.options` and :mod:`.finetune`: :class:`DetectOptions` and the one entry point,
  :func:`finetune_detector`.

Inputs are RGB in [0, 1], normalised with the ImageNet mean/std inside the model, resized so the
short side is ``min_size`` (a random choice when several are given) and the long side at most
``max_size``. By default the fine-tune runs 12 epochs of the train images with boxes (90k
iterations at batch 16 is ~12 COCO epochs), at lr ``0.02 * batch / 16``.
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
