"""One entry point for every kind of backbone weights an evaluation can start from.

:func:`load_backbone` accepts ``"random"`` (seed 0, the baseline every method must beat);
``"pixels"`` (raw pixel patches, :mod:`densessl.eval.raw_pixels`); a run or checkpoint (its
exported backbone); a torchvision state dict (``.pt``/``.pth`` with ``weights_only=True``, or
``.safetensors``; wrappers and ``module.``/``backbone.`` prefixes accepted, ``fc.*`` dropped,
strict, arch inferred); a timm CNN state dict (``backbone="timm/convnext_tiny"``); a timm ViT
state dict (shapes give width, patch and depth; the head count is the registered arch's).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densessl.engine.init_weights import map_to_backbone
from densessl.errors import WeightsError
from densessl.eval.raw_pixels import PIXELS, RawPixels
from densessl.models.backbones import build_backbone
from densessl.models.timm_backbone import TimmBackbone
from densessl.models.vit import VIT_SPECS
from densessl.models.weight_files import STATE_DICT_SUFFIXES, unwrap_state_dict
from densessl.models.weight_files import read_weights_file as read_file
from densessl.runs import CHECKPOINT_FORMAT, method_from_checkpoint, open_run

RANDOM = "random"
DEFAULT_RANDOM_ARCH = "resnet50"
ACCEPTED = (
    "accepted: 'random', 'pixels', a run directory, a densessl checkpoint (.pt), or an exported "
    "torchvision state dict (.pt, .pth, .safetensors) or timm ViT state dict (.pt)"
)
# (uses bottleneck blocks, number of blocks in layer3) -> arch; layer3 is the stage whose depth
# differs between every pair of supported ResNets.
_ARCH_BY_BLOCKS = {
    (False, 2): "resnet18",
    (False, 6): "resnet34",
    (True, 6): "resnet50",
    (True, 23): "resnet101",
}


def load_backbone(
    weights: str | Path, backbone: str | None = None, network: str | None = None
) -> nn.Module:
    """Build a backbone from ``weights``, on the CPU, in eval mode, parameters still trainable
    (``forward(x)`` -> ``{"c2": ..., "c5": ...}``).

    Args:
        backbone: architecture name, e.g. ``"resnet50"``; default resnet50 for ``"random"``,
            inferred for state dicts, checked against a run's.
        network: for runs, ``"online"`` or ``"teacher"`` (default: the released one).

    WeightsError if missing, unreadable, or not fitting the architecture.
    """
    if str(weights) == RANDOM:
        return _random_backbone(backbone or DEFAULT_RANDOM_ARCH)
    if str(weights) == PIXELS:
        return RawPixels()
    path = Path(weights)
    if not path.exists():
        raise WeightsError(f"no weights at {path}; {ACCEPTED}")
    if path.is_dir():
        return _from_run(path, backbone, network)
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise WeightsError(f"cannot read weights from {path} (unknown suffix); {ACCEPTED}")
    state = read_weights_file(path)
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return _from_run(path, backbone, network, state)
    return backbone_from_state_dict(path, state, backbone)


def _random_backbone(arch: str) -> nn.Module:
    # A private RNG stream: the baseline is the same in every process, and the caller's global
    # RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = build_backbone(arch)
        except (KeyError, ValueError) as err:
            raise WeightsError(f"cannot build random backbone {arch!r}: {err}") from err
    return model.eval()


def run_modules(
    path: Path, arch: str | None, network: str | None, state: dict | None = None
) -> dict[str, nn.Module]:
    """The exportable modules of a run directory or checkpoint (``Method.exportable``), checked
    against ``arch``; ``state`` is the checkpoint when the caller has already read it."""
    if network not in (None, "online", "teacher"):
        raise WeightsError(f"network must be 'online' or 'teacher', not {network!r}")
    try:
        method, _ = method_from_checkpoint(state) if state is not None else open_run(path)
    except WeightsError as err:
        raise WeightsError(f"cannot load run {path}: {err}; {ACCEPTED}") from err
    modules = method.exportable(network)
    model = modules["backbone"]
    if arch is not None and getattr(model, "arch", None) != arch:
        raise WeightsError(f"{path} holds a {getattr(model, 'arch', '?')}, not a {arch}")
    return modules


def _from_run(
    path: Path, arch: str | None, network: str | None, state: dict | None = None
) -> nn.Module:
    return run_modules(path, arch, network, state)["backbone"].cpu().eval()


def read_weights_file(path: Path) -> Any:
    """The contents of a ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors`` file;
    WeightsError with a one-line reason and what is accepted when it cannot be read."""
    try:
        return read_file(path)
    except WeightsError as err:
        raise WeightsError(f"{err}; {ACCEPTED}") from err


def infer_arch(state: dict[str, torch.Tensor]) -> str:
    """The ResNet arch of a torchvision-keyed state dict, from its block types and counts."""
    bottleneck = "layer1.0.conv3.weight" in state
    layer3_blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    arch = _ARCH_BY_BLOCKS.get((bottleneck, len(layer3_blocks)))
    if arch is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise WeightsError(
            f"unrecognised ResNet: {kind} blocks, {len(layer3_blocks)} blocks in layer3 "
            f"(supported: {', '.join(_ARCH_BY_BLOCKS.values())}); pass the backbone explicitly"
        )
    return arch


def infer_vit(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """The registered ViT arch of a timm-keyed state dict and its constructor options."""
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    names = [n for n, (p, d, dp, _) in VIT_SPECS.items() if (p, d, dp) == (patch, dim, depth)]
    if not names:
        raise WeightsError(
            f"unrecognised ViT: width {dim}, patch {patch}, depth {depth} "
            f"(supported: {', '.join(VIT_SPECS)})"
        )
    class_token = "cls_token" in state
    cells = state["pos_embed"].shape[1] - int(class_token)
    options = dict(class_token=class_token, final_norm="norm.weight" in state,
                   img_size=round(cells**0.5) * patch)  # fmt: skip
    return names[0], options


def timm_weights(
    path: Path, weights: dict[str, torch.Tensor], model: TimmBackbone
) -> dict[str, torch.Tensor]:
    """timm-named (full model or smp ``tu-`` encoder) weights under ``model``'s own keys,
    without timm's classifier-only layers. Every backbone tensor must be there."""
    mapped, report = map_to_backbone(weights, model, str(path))
    if report.missing or report.mismatched:
        raise WeightsError(
            f"{path} does not fit {model.arch}: {len(report.missing)} tensors missing (e.g. "
            f"{report.missing[:1]}), {len(report.mismatched)} of another shape; {ACCEPTED}"
        )
    return mapped


def backbone_from_state_dict(path: Path, state: Any, arch: str | None) -> nn.Module:
    """A backbone built for ``state`` (arch inferred when None) and strictly loaded from it;
    ``path`` only names the source in error messages."""
    options: dict[str, Any] = {}
    try:
        weights = unwrap_state_dict(state)
        if "patch_embed.proj.weight" in weights:
            inferred, options = infer_vit(weights)
            arch = arch or inferred
        arch = arch or infer_arch(weights)
    except WeightsError as err:
        raise WeightsError(f"{path}: {err}; {ACCEPTED}") from err
    try:
        model = build_backbone(arch, **options)
    except (KeyError, ValueError) as err:
        raise WeightsError(f"cannot build backbone {arch!r} for {path}: {err}") from err
    if isinstance(model, TimmBackbone):  # a --format timm or smp export: other names
        weights = timm_weights(path, weights, model)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        summary = " ".join(str(err).split())[:300]
        raise WeightsError(f"{path} does not fit {arch}: {summary}") from err
    return model.eval()
