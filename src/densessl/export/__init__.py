"""Method checkpoint -> downstream weights, with the exact key sets checked on the way out.

``densessl export RUN --format torchvision --out FILE`` writes the backbone as a plain state
dict that loads into ``torchvision.models.<arch>()`` with missing keys exactly ``fc.weight`` and
``fc.bias`` and no unexpected keys (it is checked before the file is written). Which network is
exported by default is the method's choice (``Method.export_network``: the online encoder for
MoCo-v2 and DenseCL, as their authors released).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from omegaconf import DictConfig

from densessl.config import build_config
from densessl.engine.checkpoint import atomic_save, load_checkpoint
from densessl.methods import Method

FORMATS = ("torchvision",)


class ExportError(Exception):
    """A user-facing export problem (missing run, unknown format); exit code 2 in the CLI."""


def resolve_checkpoint(run: str | Path) -> Path:
    """A run directory (its checkpoints/last.pt) or a checkpoint file."""
    run = Path(run)
    path = run / "checkpoints" / "last.pt" if run.is_dir() else run
    if not path.exists():
        raise ExportError(f"no checkpoint at {path}: pass a run directory or a .pt checkpoint")
    return path


def load_method(run: str | Path) -> tuple[Method, DictConfig]:
    """Rebuild the method of a run on the CPU and load its trained weights."""
    from densessl.engine.setup import build_method

    state = load_checkpoint(resolve_checkpoint(run))
    saved = state["config"]
    cfg = build_config(saved["method"]["name"], overrides=None)
    cfg.merge_with(saved)
    method = build_method(cfg, steps=max(1, int(cfg.steps)))
    method.load_state_dict(state["model"])
    return method.eval(), cfg


def torchvision_state_dict(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision ResNet names, verified against the real model."""
    weights = {k: v.detach().clone().cpu() for k, v in backbone.state_dict().items()}
    reference = getattr(torchvision.models, backbone.arch)()
    result = reference.load_state_dict(weights, strict=False)
    if set(result.missing_keys) != {"fc.weight", "fc.bias"} or result.unexpected_keys:
        raise ExportError(
            f"backbone does not match torchvision {backbone.arch}: missing "
            f"{sorted(result.missing_keys)}, unexpected {sorted(result.unexpected_keys)}"
        )
    return weights


def export(run: str | Path, fmt: str, out: str | Path, network: str | None = None) -> Path:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    if network not in (None, "online", "teacher"):
        raise ExportError(f"--network must be online or teacher, not {network!r}")
    method, _ = load_method(run)
    backbone = method.exportable(network)["backbone"]
    weights = torchvision_state_dict(backbone)
    out = Path(out)
    atomic_save(weights, out)
    return out
