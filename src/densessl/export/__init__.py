"""Method checkpoint -> downstream weights, with the exact key sets checked on the way out.

``densessl export RUN --format FORMAT --out FILE [--network online|teacher]`` writes the
pretrained networks of a run in the layout a downstream library expects, verifies that layout
before the file is written, and returns the configuration lines that must go with it:

=============  ===================================================================================
torchvision    plain state dict; loads into ``torchvision.models.<arch>()`` with missing keys
               exactly ``fc.weight``/``fc.bias``, and into a detection model's ``backbone.body``
torchvision_   backbone + FPN + box head (methods that pretrain them: SoCo) under the names of
detection      torchvision's ``fasterrcnn/maskrcnn_resnet50_fpn_v2``; only the RPN, the predictors
               and the mask branch are missing when loaded
timm           the same file (timm's ResNets use torchvision's names); ``num_classes=0`` models
               load it with no missing or unexpected key. ViTs: timm ``VisionTransformer``
               weights, every key matched, with the constructor arguments printed
detectron2     ``.pkl`` of numpy arrays with ``__author__`` and ``matching_heuristics``, keys
               renamed to ``stem``/``res2..res5``/``shortcut``/``convN.norm``; plus
               ``fpn_lateral/output{2..5}`` and ``box_head.conv{1..4}``/``fc1`` when pretrained
mmdet          ``{"state_dict": {"backbone.*": ...}, "meta": ...}``; plus ``neck.*`` and
               ``roi_head.bbox_head.*`` when pretrained
safetensors    the torchvision state dict as ``.safetensors``
=============  ===================================================================================

Which network is exported by default is the method's choice (``Method.export_network``: the
online encoder for MoCo-v2 and DenseCL, as their authors released; the teacher for DINO-style
methods). Every format is RGB input with ImageNet mean/std, the pretraining normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from densessl.config import build_config
from densessl.engine.checkpoint import load_checkpoint
from densessl.errors import ExportError
from densessl.methods import Method, get_method

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "export",
    "load_method",
    "method_from_checkpoint",
    "resolve_checkpoint",
]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how to use it.

    Attributes:
        path: the written file.
        instructions: the loading code or config lines for the target library, ready to print.
        num_tensors: tensors in the file.
    """

    path: Path
    instructions: str
    num_tensors: int


def resolve_checkpoint(run: str | Path) -> Path:
    """A run directory (its checkpoints/last.pt) or a checkpoint file."""
    run = Path(run)
    path = run / "checkpoints" / "last.pt" if run.is_dir() else run
    if not path.exists():
        raise ExportError(f"no checkpoint at {path}: pass a run directory or a .pt checkpoint")
    return path


def load_method(run: str | Path) -> tuple[Method, DictConfig]:
    """Rebuild the method of a run on the CPU and load its trained weights."""
    return method_from_checkpoint(load_checkpoint(resolve_checkpoint(run)))


def method_from_checkpoint(state: dict) -> tuple[Method, DictConfig]:
    """Rebuild a method from a loaded densessl checkpoint (its config and weights), on the CPU."""
    from densessl.engine.setup import build_method

    saved = state["config"]
    cfg = build_config(get_method(saved["method"]["name"]), overrides=None)
    cfg.merge_with(saved)
    method = build_method(cfg)
    method.load_state_dict(state["model"])
    return method.eval(), cfg


def _writers() -> dict[str, Callable[[dict[str, torch.nn.Module], Path], ExportResult]]:
    from densessl.export import detectron2, mmdet, torchvision_detection, torchvision_format

    return {
        "torchvision": torchvision_format.write_torchvision,
        "torchvision_detection": torchvision_detection.write_torchvision_detection,
        "timm": torchvision_format.write_timm,
        "detectron2": detectron2.write,
        "mmdet": mmdet.write,
        "safetensors": torchvision_format.write_safetensors,
    }


FORMATS = ("torchvision", "torchvision_detection", "timm", "detectron2", "mmdet", "safetensors")


def export(run: str | Path, fmt: str, out: str | Path, network: str | None = None) -> ExportResult:
    """Write the pretrained networks of ``run`` in format ``fmt`` to ``out``.

    Args:
        run: run directory or densessl checkpoint file.
        fmt: one of :data:`FORMATS`.
        out: output file; its folder is created. Written atomically.
        network: ``"online"`` or ``"teacher"``; None = the method's default.

    Returns:
        The written path and the instructions for the target library.

    Raises:
        ExportError: unknown format or network, missing run, or a layout check that failed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    if network not in (None, "online", "teacher"):
        raise ExportError(f"--network must be online or teacher, not {network!r}")
    method, _ = load_method(run)
    modules = method.exportable(network)
    return _writers()[fmt](modules, Path(out))
