"""Detection transfer: fine-tune torchvision Faster / Mask R-CNN R-FPN from a backbone, COCO AP.

The detector is torchvision's with an FPN over the ResNet trunk, all five trunk stages
trainable (``FREEZE_AT: 0`` of the DenseCL protocol). The trunk is loaded from a
:class:`ResNetBackbone` (its keys are torchvision's, so they map one to one onto
``model.backbone.body``); the FPN and heads start random unless ``extra_state`` supplies them.

Two head layouts (``heads``):

* "v1" (``fasterrcnn_resnet50_fpn``): FPN without norm, 1-conv RPN head, 2-fc box head, 4-conv
  mask head; no norm outside the trunk.
* "v2" (``fasterrcnn_resnet50_fpn_v2`` / ``maskrcnn_resnet50_fpn_v2``, rebuilt here for any
  ResNet depth): FPN with BN, 2-conv RPN head, 4conv1fc box head with BN, mask head with BN. It is
  the layout SoCo pretrains, so its FPN and box head can start from those weights
  (:mod:`densessl.eval.detection_weights` reads them under these names).
* "auto" (:func:`finetune_detector`'s default): v2 when ``extra_state`` holds v2 FPN/box-head
  weights, else v1, so a plain backbone is fine-tuned exactly as before. The v2 widths (FPN
  channels, box-head convs and fc) follow the pretrained weights; torchvision's 256 / 4x256 /
  1024 when there are none.

Recipe (detectron2's 1x, scaled to any dataset and batch): SGD, momentum 0.9, weight decay 1e-4
(none on norm parameters), lr ``0.02 * batch / 16``, linear warm-up from 0.001x, lr x0.1 at 2/3
and 8/9 of the iterations (60k and 80k of 90k); by default 12 epochs of the train images with
boxes (90k iterations at batch 16 is ~12 COCO epochs). Training images are flipped horizontally
with probability 0.5. Inputs are RGB in [0, 1], normalised with the ImageNet mean/std inside
the model, resized so the short side is ``min_size`` (a random choice when several are given)
and the long side at most ``max_size``.

Trunk norms (``norm``): "frozen" = ``FrozenBatchNorm2d`` with the pretrained statistics
(torchvision's default for pretrained weights; poor for a random trunk, whose BN would then be
the identity); "bn" = trainable ``BatchNorm2d`` over each process's batch; "sync" = "bn" made
synchronised when a process group is initialised (``torch.nn.SyncBatchNorm`` on NCCL, densessl's
CPU-capable :class:`~densessl.models.norm.GlobalBatchNorm2d` on gloo), else plain "bn". The
DenseCL protocol uses SyncBN also in the FPN and heads; torchvision's v1 heads have no norm, and
the v2 ones are trainable BN, synchronised whenever a process group is initialised, whatever the
trunk's ``norm``.

Several processes: when a process group is initialised (the caller runs ``dist.init``, as the
CLI does under torchrun), every rank must call :func:`finetune_detector`; the model is wrapped in
DDP, ``batch_size`` is the global batch, evaluation is sharded and COCOeval runs on rank 0.

Scores are COCO AP in percent. A model that detects nothing scores 0; a val split without any
box raises :class:`DataError` before training, so COCOeval always has something to score.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torchvision
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from densessl import dist
from densessl.data.coco import CocoDetection, open_coco
from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.errors import DataError
from densessl.eval.features import progress
from densessl.models.backbones import ResNetBackbone
from densessl.models.norm import convert_batchnorm

log = logging.getLogger("densessl")

MODELS = ("faster_rcnn", "mask_rcnn")
NORMS = ("frozen", "sync", "bn")
HEADS = ("auto", "v1", "v2")
DEFAULT_ARCH = "resnet18"
# detectron2 1x: 90k iterations at batch 16, lr 0.02, steps at 60k and 80k, 1000 warm-up steps.
EPOCHS_1X = 12
LR_PER_IMAGE = 0.02 / 16
LR_STEP_FRACTIONS = (60 / 90, 80 / 90)
LR_DECAY = 0.1
WARMUP_MAX_ITERATIONS = 1000
WARMUP_FRACTION = 0.05  # of short runs, where 1000 steps would be most of the schedule
WARMUP_START_FACTOR = 0.001
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
MASK_THRESHOLD = 0.5  # on Mask R-CNN's per-pixel probabilities, as torchvision's references
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
# torchvision's default anchors (its _default_anchorgen): one size per FPN level P2..P6.
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
MASK_HEAD_CONVS = [256] * 4  # maskrcnn_resnet50_fpn_v2's mask head; never pretrained here
# Keys only a v2 detector has: a BN inside the FPN blocks, or the box head's Sequential (v1's
# box head is TwoMLPHead, keys fc6/fc7).
_V2_KEY = re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.\d+\.1\.|roi_heads\.box_head\.\d+\.")
_V2_BOX_CONV = re.compile(r"roi_heads\.box_head\.(\d+)\.0\.weight")  # (out, in, 3, 3)
_V2_BOX_FC = re.compile(r"roi_heads\.box_head\.\d+\.weight")  # (fc_dim, channels * 7 * 7)


@dataclass
class DetectionScores:
    """COCO AP of a fine-tuned detector, in percent (NaN only if COCOeval had nothing to score).

    Attributes:
        box_ap, box_ap50, box_ap75: box AP at IoU 0.5:0.95, 0.5 and 0.75.
        mask_ap, mask_ap50, mask_ap75: the same for masks; None for Faster R-CNN.
        iterations: training iterations run.
        extra_keys_used: ``extra_state`` keys loaded into the detector.
        heads: the detector's head layout, "v1" or "v2".
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

    def to_dict(self) -> dict:
        """JSON-safe scores rounded to 4 decimals; NaN becomes None (null)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = None if math.isnan(value) else round(value, 4)
        return out

    def format_table(self, title: str = "detection (COCO AP, %)") -> str:
        """A plain-text table: AP, AP50, AP75 for boxes (and masks)."""
        kinds = [("box", (self.box_ap, self.box_ap50, self.box_ap75))]
        if self.mask_ap is not None:
            kinds.append(("mask", (self.mask_ap, self.mask_ap50, self.mask_ap75)))
        rule = "-" * 32
        lines = [title, rule, f"{'':<6}{'AP':>8} {'AP50':>8} {'AP75':>8}", rule]
        for kind, values in kinds:
            lines.append(f"{kind:<6}" + " ".join(f"{v:>8.2f}" for v in values))
        lines += [rule, f"after {self.iterations} iterations"]
        lines.append(f"{self.heads} heads, {len(self.extra_keys_used)} pretrained tensors loaded")
        return "\n".join(lines)


@dataclass(frozen=True)
class HeadWidths:
    """Widths of a v2 detector's FPN and box head; the defaults are torchvision's.

    Attributes:
        fpn: channels of every pyramid level (also the RPN head's and the RoI features').
        box_convs: output channels of the box head's 3x3 convs, in order.
        box_fc: features out of the box head's fc (the box predictor's input).
    """

    fpn: int = 256
    box_convs: tuple[int, ...] = (256, 256, 256, 256)
    box_fc: int = 1024

    @classmethod
    def of(cls, state: dict[str, torch.Tensor]) -> HeadWidths:
        """The widths of v2 FPN / box-head weights (torchvision names); defaults for absent parts.

        A SoCo run may pretrain narrower parts than torchvision's (the tests use 16 channels),
        so the detector is sized to the weights rather than the weights refused.
        """
        default = cls()
        lateral = state.get("backbone.fpn.inner_blocks.0.0.weight")  # (fpn, C2, 1, 1)
        convs = sorted((int(m[1]), v.shape[0]) for k, v in state.items()
                       if (m := _V2_BOX_CONV.fullmatch(k)))  # fmt: skip
        fcs = [v.shape[0] for k, v in state.items() if _V2_BOX_FC.fullmatch(k)]
        return cls(
            fpn=default.fpn if lateral is None else lateral.shape[0],
            box_convs=tuple(c for _, c in convs) or default.box_convs,
            box_fc=fcs[0] if fcs else default.box_fc,
        )


def has_v2_heads(state: dict[str, torch.Tensor]) -> bool:
    """Whether torchvision-named weights hold a v2 FPN (with BN) or v2 box head."""
    return any(_V2_KEY.match(k) for k in state)


def _resolve_arch(backbone: ResNetBackbone | None, arch: str | None) -> str:
    if backbone is None:
        return arch or DEFAULT_ARCH
    if arch is not None and arch != backbone.arch:
        raise ValueError(f"arch {arch!r} differs from the backbone's {backbone.arch!r}")
    return backbone.arch


def _load_trunk(body: nn.Module, backbone: ResNetBackbone) -> None:
    """Copy the backbone's weights into the detector's trunk; every key must find its place."""
    result = body.load_state_dict(backbone.state_dict(), strict=False)
    # FrozenBatchNorm2d has no num_batches_tracked and drops it while loading (so it is not even
    # reported); anything else left over means the trunk and the backbone differ.
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"backbone weights do not fit the {backbone.arch} trunk: missing "
            f"{result.missing_keys[:5]}, unexpected {unexpected[:5]}"
        )


def _synchronise(detector: nn.Module) -> nn.Module:
    if not dist.is_initialized():
        return detector
    # torch's SyncBatchNorm refuses CPU tensors; densessl's GlobalBatchNorm2d works on gloo.
    mode = "torch_sync" if tdist.get_backend() == "nccl" else "sync"
    return convert_batchnorm(detector, mode)


def _v2_parts(
    arch: str, trunk_norm: type[nn.Module], num_classes: int, model: str, widths: HeadWidths
) -> tuple[BackboneWithFPN, dict[str, Any]]:
    """torchvision's ``*_resnet50_fpn_v2`` layout for any ResNet: its builders hard-code
    resnet50, so their steps are repeated here (BN passed to the FPN itself, 2-conv RPN head,
    4conv1fc box head and mask head with BN), with the widths of the pretrained parts.

    Returns:
        The trunk + FPN, and the keyword arguments of ``FasterRCNN`` / ``MaskRCNN`` for the rest.
    """
    trunk = getattr(torchvision.models, arch)(weights=None, norm_layer=trunk_norm)
    # C2..C5 widths as torchvision's _resnet_fpn_extractor computes them (64..512 for R18).
    in_channels = [trunk.inplanes // 8 * 2**i for i in range(4)]
    stages = {f"layer{i + 1}": str(i) for i in range(4)}
    fpn = BackboneWithFPN(
        trunk, stages, in_channels, widths.fpn, LastLevelMaxPool(), norm_layer=nn.BatchNorm2d
    )
    anchors = AnchorGenerator(ANCHOR_SIZES, (ANCHOR_RATIOS,) * len(ANCHOR_SIZES))
    parts: dict[str, Any] = {
        "num_classes": None,  # the predictors below carry it, sized to the pretrained fc
        "rpn_anchor_generator": anchors,
        "rpn_head": RPNHead(widths.fpn, anchors.num_anchors_per_location()[0], conv_depth=2),
        "box_head": FastRCNNConvFCHead(
            (widths.fpn, 7, 7), list(widths.box_convs), [widths.box_fc], norm_layer=nn.BatchNorm2d
        ),
        "box_predictor": FastRCNNPredictor(widths.box_fc, num_classes),
    }
    if model == "mask_rcnn":
        parts["mask_head"] = MaskRCNNHeads(widths.fpn, MASK_HEAD_CONVS, 1, nn.BatchNorm2d)
        parts["mask_predictor"] = MaskRCNNPredictor(MASK_HEAD_CONVS[-1], 256, num_classes)
    return fpn, parts


def build_detector(
    backbone: ResNetBackbone | None,
    num_classes: int,
    arch: str | None = None,
    model: str = "faster_rcnn",
    norm: str = "frozen",
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    detector_options: dict[str, Any] | None = None,
    heads: str = "v1",
    widths: HeadWidths | None = None,
) -> GeneralizedRCNN:
    """A torchvision R-FPN detector whose trunk holds ``backbone``'s weights.

    Args:
        backbone: the pretrained trunk, or None for torchvision's random init.
        num_classes: classes including the background (``CocoDetection.num_classes``).
        arch: torchvision ResNet name; defaults to ``backbone.arch`` (resnet18 without one).
        model: "faster_rcnn" or "mask_rcnn".
        norm: "frozen", "bn" or "sync" trunk norms (see the module docstring).
        min_size: short side of the resized input; several values = a random one per batch in
            training, the last one at test time.
        max_size: cap on the long side of the resized input.
        detector_options: more keyword arguments of torchvision's ``FasterRCNN`` / ``MaskRCNN``
            (e.g. ``box_detections_per_img``, ``rpn_post_nms_top_n_test``).
        heads: "v1" or "v2" layout of the FPN and heads (see the module docstring).
        widths: v2 FPN / box-head widths; None = torchvision's. Ignored for v1.

    Returns:
        The detector on the CPU, in training mode.
    """
    if model not in MODELS:
        raise ValueError(f"unknown detector {model!r}; known: {', '.join(MODELS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if heads not in ("v1", "v2"):
        raise ValueError(f"unknown head layout {heads!r}; known: v1, v2")
    arch = _resolve_arch(backbone, arch)
    norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
    if heads == "v1":
        fpn = resnet_fpn_backbone(
            backbone_name=arch, weights=None, norm_layer=norm_layer, trainable_layers=5
        )
        parts: dict[str, Any] = {"num_classes": num_classes}
    else:
        fpn, parts = _v2_parts(arch, norm_layer, num_classes, model, widths or HeadWidths())
    if backbone is not None:
        _load_trunk(fpn.body, backbone)
    detector_class = MaskRCNN if model == "mask_rcnn" else FasterRCNN
    detector = detector_class(
        fpn,
        min_size=min_size if isinstance(min_size, int) else tuple(min_size),
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        **parts,
        **(detector_options or {}),
    )
    if norm == "sync":
        return _synchronise(detector)
    if heads == "v2":
        # The protocol's SyncBN in the FPN and heads, whatever the trunk does (frozen or
        # per-process BN). Neither part is itself a BN, so they are converted in place.
        _synchronise(detector.backbone.fpn)
        _synchronise(detector.roi_heads)
    return detector


def load_extra_state(detector: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load pretrained FPN / head weights in torchvision naming; return the keys used.

    Keys must be the detector's own (``backbone.fpn.*``, ``rpn.*``, ``roi_heads.box_head.*``...);
    trunk keys (``backbone.body.*``) are refused (the trunk comes from the backbone). Keys the
    detector lacks, or whose shape differs (e.g. a box predictor for other classes), are skipped
    and logged; if no key at all is used, the state is taken for a naming mistake.
    """
    trunk = [k for k in state if k.startswith("backbone.body.")]
    if trunk:
        raise ValueError(f"extra_state holds trunk keys ({trunk[0]}, ...); pass those as backbone")
    own = detector.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(fitting))
    if state and not fitting:
        raise ValueError(
            f"none of the {len(state)} extra_state keys ({skipped[0]}, ...) fits the detector; "
            "use torchvision names such as backbone.fpn.inner_blocks.0.0.weight"
        )
    detector.load_state_dict(fitting, strict=False)
    if skipped:
        log.warning(
            "extra_state: %d keys skipped (absent or other shape): %s", len(skipped), skipped
        )
    return sorted(fitting)


def learning_rate(iteration: int, base_lr: float, iterations: int) -> float:
    """The lr of 0-based ``iteration``: linear warm-up, then x0.1 at 2/3 and 8/9 of the run."""
    steps = sum(iteration >= round(f * iterations) for f in LR_STEP_FRACTIONS)
    factor = LR_DECAY**steps
    warmup = min(WARMUP_MAX_ITERATIONS, max(1, int(WARMUP_FRACTION * iterations)))
    if iteration < warmup:
        alpha = iteration / warmup
        factor *= WARMUP_START_FACTOR * (1 - alpha) + alpha
    return base_lr * factor


def _parameter_groups(detector: nn.Module) -> list[dict]:
    """Trainable parameters: norm ones without weight decay (detectron2's WEIGHT_DECAY_NORM)."""
    decayed, exempt = [], []
    for module in detector.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (exempt if isinstance(module, _NORM_TYPES) else decayed).append(p)
    return [
        {"params": decayed, "weight_decay": WEIGHT_DECAY},
        {"params": exempt, "weight_decay": 0},
    ]


def _as_lists(samples: list) -> tuple[list, list]:
    images, targets = zip(*samples, strict=True)
    return list(images), list(targets)


def _batch_indices(
    indices: list[int], batch_size: int, seed: int, rank: int, world: int
) -> Iterator[list[int]]:
    """This rank's share of each global batch, from an endless stream of reshuffled epochs."""
    epoch, order = 0, []
    while True:
        while len(order) < batch_size:
            # Every rank draws the same order and takes disjoint slices of each global batch.
            order += [
                indices[k] for k in np.random.default_rng([seed, epoch]).permutation(len(indices))
            ]
            epoch += 1
        chunk, order = order[:batch_size], order[batch_size:]
        yield chunk[rank::world]


def _flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror (3, H, W) image, its xyxy boxes and (M, H, W) masks left-right."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"]
    target["boxes"] = torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
    )
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def _loader(dataset, batch_sampler, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=_as_lists,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


def _train(
    detector: nn.Module,
    dataset: CocoDetection,
    iterations: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    seed: int,
    workers: int,
) -> None:
    rank, world = dist.rank(), dist.world_size()
    indices = [i for i in range(len(dataset)) if dataset.num_boxes(i) > 0]
    batches = _batch_indices(indices, batch_size, seed, rank, world)
    flips = np.random.default_rng([seed, 1, rank])
    model = detector
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(detector, device_ids=ids)
    optimizer = torch.optim.SGD(_parameter_groups(detector), lr=lr, momentum=MOMENTUM)
    model.train()
    bar = progress(None, "detection fine-tune", iterations, "it")
    loader = _loader(dataset, batches, workers, device)
    for iteration, (images, targets) in zip(range(iterations), loader, strict=False):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, lr, iterations)
        samples = [
            _flip(x, t) if flips.random() < 0.5 else (x, t)
            for x, t in zip(images, targets, strict=True)
        ]
        images = [x.to(device, non_blocking=True) for x, _ in samples]
        targets = [
            {k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in samples
        ]
        losses = model(images, targets)
        loss = sum(losses.values())
        value = float(loss.detach())  # one sync per iteration; detection steps are long anyway
        if not math.isfinite(value):
            raise FloatingPointError(
                f"detection loss became {value} at iteration {iteration}; lower lr ({lr})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(
            loss=f"{value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False
        )
        bar.update()
    bar.close()


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
def _predict(
    detector: nn.Module, dataset: CocoDetection, batch_size: int, device: torch.device, workers: int
) -> tuple[list, list]:
    """COCO results of this rank's share of ``dataset``, gathered from every rank."""
    detector.eval()
    rank, world = dist.rank(), dist.world_size()
    mine = list(range(rank, len(dataset), world))
    batches = [mine[k : k + batch_size] for k in range(0, len(mine), batch_size)]
    box_results, mask_results = [], []
    bar = progress(None, "detection eval", len(mine), "img")
    for images, targets in _loader(dataset, batches, workers, device):
        outputs = detector([x.to(device, non_blocking=True) for x in images])
        for output, target in zip(outputs, targets, strict=True):
            boxes, masks = _detections(output, target["image_id"], dataset.category_ids)
            box_results += boxes
            mask_results += masks
        bar.update(len(images))
    bar.close()
    gathered = dist.all_gather_objects((box_results, mask_results))
    return [r for b, _ in gathered for r in b], [r for _, m in gathered for r in m]


def coco_ap(dataset: CocoDetection, results: list[dict], iou_type: str) -> tuple[float, ...]:
    """(AP, AP50, AP75) in percent of COCO ``results`` against ``dataset.coco``; 0 if empty."""
    if not results:  # loadRes cannot take an empty list; nothing detected scores 0
        return 0.0, 0.0, 0.0
    # pycocotools reports progress with print(); keep the console for our own bars.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval writes -1 when nothing was scoreable.
    return tuple(100.0 * float(v) if v >= 0 else math.nan for v in evaluator.stats[:3])


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return (
        torch.device("cuda", dist.local_rank())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def _open_splits(data_root: str | Path, with_masks: bool) -> tuple[CocoDetection, CocoDetection]:
    train = open_coco(data_root, "train", with_masks=with_masks)
    # Ground-truth masks for COCOeval come from .coco; the val targets need none.
    val = open_coco(data_root, "val")
    if not any(train.num_boxes(i) for i in range(len(train))):
        raise DataError(f"the train split of {data_root} has no usable box; annotate some objects")
    if not any(val.num_boxes(i) for i in range(len(val))):
        raise DataError(
            f"the val split of {data_root} has no usable box; evaluate on one with boxes"
        )
    if val.category_ids != train.category_ids:
        raise DataError(
            f"train and val of {data_root} define different categories; give both the same list"
        )
    return train, val


def finetune_detector(
    backbone: ResNetBackbone | None,
    data_root: str | Path,
    arch: str | None = None,
    model: str = "faster_rcnn",
    iterations: int | None = None,
    batch_size: int = 2,
    lr: float | None = None,
    norm: str = "frozen",
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    device: str | torch.device | None = None,
    seed: int = 0,
    extra_state: dict[str, torch.Tensor] | None = None,
    workers: int = 4,
    detector_options: dict[str, Any] | None = None,
    heads: str = "auto",
) -> DetectionScores:
    """Fine-tune a Faster / Mask R-CNN R-FPN from ``backbone`` on a COCO-format dataset.

    Trains on ``open_coco(data_root, "train")`` (images without boxes are skipped) and scores
    ``open_coco(data_root, "val")`` with COCOeval. Recipe and norms: see the module docstring.

    Args:
        backbone: pretrained trunk (any device; copied), or None for a random init.
        data_root: COCO-format dataset folder (see :func:`densessl.data.coco.open_coco`).
        arch: ResNet name; defaults to ``backbone.arch`` (resnet18 without a backbone).
        model: "faster_rcnn" or "mask_rcnn" (also reports mask AP).
        iterations: training iterations; None = 12 epochs of the train images with boxes.
        batch_size: images per iteration over all processes (divisible by their number).
        lr: base learning rate; None = ``0.02 * batch_size / 16``.
        norm: "frozen", "bn" or "sync" trunk norms.
        min_size: short side of the resized input (several = multi-scale training).
        max_size: cap on the long side of the resized input.
        device: where to train; None = this process's GPU when there is one, else the CPU.
        seed: seeds the detector's random init, the image order and the flips.
        extra_state: pretrained FPN / head weights in torchvision naming (see
            :func:`load_extra_state`).
        workers: data-loading processes per training process.
        detector_options: more torchvision detector arguments (see :func:`build_detector`);
            torchvision's defaults when None (1000 test proposals, 100 detections per image).
        heads: "v1", "v2", or "auto" = v2 exactly when ``extra_state`` holds v2 FPN / box-head
            weights (the v2 widths then follow them).

    Returns:
        The val scores, the same on every rank.

    Raises:
        DataError: missing dataset, or a split without boxes.
    """
    if heads not in HEADS:
        raise ValueError(f"unknown head layout {heads!r}; known: {', '.join(HEADS)}")
    extra_state = extra_state or {}
    if heads == "auto":
        heads = "v2" if has_v2_heads(extra_state) else "v1"
    world = dist.world_size()
    if batch_size < 1 or batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of {world} ranks")
    device = _resolve_device(device)
    train, val = _open_splits(data_root, with_masks=model == "mask_rcnn")
    if iterations is None:
        usable = sum(1 for i in range(len(train)) if train.num_boxes(i))
        iterations = math.ceil(EPOCHS_1X * usable / batch_size)
    lr = LR_PER_IMAGE * batch_size if lr is None else lr
    torch.manual_seed(seed)  # FPN / head init and torchvision's multi-scale choice
    widths = HeadWidths.of(extra_state) if heads == "v2" else None
    detector = build_detector(
        backbone, train.num_classes, arch, model, norm, min_size, max_size, detector_options,
        heads, widths,
    )  # fmt: skip
    used = load_extra_state(detector, extra_state) if extra_state else []
    log.info("%s heads; extra_state: loaded %d keys into the detector", heads, len(used))
    detector.to(device)
    _train(detector, train, iterations, batch_size, lr, device, seed, workers)
    box_results, mask_results = _predict(detector, val, batch_size // world, device, workers)
    scores = None
    if dist.is_main():
        box = coco_ap(val, box_results, "bbox")
        mask = coco_ap(val, mask_results, "segm") if model == "mask_rcnn" else (None,) * 3
        scores = DetectionScores(
            *box, *mask, iterations=iterations, extra_keys_used=used, heads=heads
        )
    return dist.all_gather_objects(scores)[0]
