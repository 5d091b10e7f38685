"""Continued pretraining: start a run's backbones from existing weights (``--init WEIGHTS``).

WEIGHTS: a torchvision/timm state dict (``.pth``/``.pt`` with ``weights_only=True``, or
``.safetensors``), wrapped or not; a densessl export; or a run folder or checkpoint (the
backbone of the network its method exports). Keys are mapped onto the run's backbone (timm,
smp ``model.``/``encoder.`` and densessl ``body.`` names recognised); tensors load into student
and teacher (BN statistics included) where name and shape match. A wrong architecture stops the
run: too few matches (no silent training from scratch), or many backbone tensors the backbone
lacks (e.g. ResNet-34 into ResNet-18). ``--init-partial`` loads whatever matches instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from densessl.errors import WeightsError
from densessl.methods import TeacherStudent
from densessl.models.timm_backbone import TimmBackbone
from densessl.models.vit import ViTBackbone
from densessl.models.weight_files import STATE_DICT_SUFFIXES, read_weights_file, unwrap_state_dict
from densessl.runs import CHECKPOINT_FORMAT, method_from_checkpoint, read_checkpoint

# Below this share of the backbone's tensors (batch counters aside) the weights are refused.
# A same-family architecture of another depth (ResNet-18 into ResNet-34) matches about half;
# the right one with a renamed or dropped layer or two still matches nearly all.
MIN_LOADED_FRACTION = 0.9
# Above this share of the backbone's tensors, tensors under the backbone's own module names that
# it has no place for mean a bigger network (ResNet-34 into ResNet-18 brings 96 for 120).
MAX_EXTRA_FRACTION = 0.05
# Prefixes under which exports and segmenters hold a backbone's keys (smp: encoder.model.*).
_CONTAINER_PREFIXES = ("encoder.model.", "encoder.", "model.")
_COUNTERS = "num_batches_tracked"  # BN step counters: absent from many checkpoints, unused


@dataclass(frozen=True)
class InitReport:
    """What ``--init`` loaded into the backbone.

    Attributes:
        missing: backbone keys without a tensor (kept at their random init).
        unexpected: source keys the backbone has no place for (a classifier, heads).
        mismatched: keys present in both with different shapes (not loaded).
        backbone_like: unexpected keys under one of the backbone's own top-level modules.
    """

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]
    total: int
    backbone_like: frozenset[str] = frozenset()

    def counted(self, keys: tuple[str, ...]) -> int:
        return sum(not k.endswith(_COUNTERS) for k in keys)

    @property
    def fraction(self) -> float:
        """Share of the backbone's tensors loaded, batch counters left out."""
        total = self.counted(self.loaded) + self.counted(self.missing)
        return self.counted(self.loaded) / max(total, 1)

    @property
    def extra_backbone(self) -> tuple[str, ...]:
        """Unexpected keys under the backbone's own top-level modules (``layer4.2.conv1`` in a
        ResNet-18), as opposed to heads and classifiers it never had (``fc``, ``head``)."""
        return tuple(k for k in self.unexpected if k in self.backbone_like)

    def line(self) -> str:
        shown = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
        return (
            f"init from {self.source}: loaded {len(self.loaded)} of {self.total} backbone tensors, "
            f"missing {len(self.missing)}{f' ({shown})' if shown else ''}, unexpected "
            f"{len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
        )


def read_init_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """The backbone tensors held by ``weights`` (see the module docstring), on the CPU;
    WeightsError for no such path, an unreadable file, or a file that holds no state dict."""
    path = Path(weights)
    accepted = "pass a .pth/.pt/.safetensors state dict, a densessl export or a run folder"
    if not path.exists():
        raise WeightsError(f"--init {path}: no such file or folder; {accepted}")
    if path.is_dir():
        try:
            return _run_backbone(path, read_checkpoint(path))
        except ValueError as err:
            raise WeightsError(f"--init {path}: {err}; {accepted}") from err
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise WeightsError(f"--init {path}: unknown suffix {path.suffix!r}; {accepted}")
    state = read_weights_file(path)
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return _run_backbone(path, state)
    try:
        return unwrap_state_dict(state)
    except WeightsError as err:
        raise WeightsError(f"--init {path}: {err}; {accepted}") from err


def _run_backbone(path: Path, state: dict) -> dict[str, torch.Tensor]:
    """The exported network's backbone tensors of a densessl training checkpoint."""
    method, _ = method_from_checkpoint(state)
    return {k: v.detach().clone() for k, v in method.exportable()["backbone"].state_dict().items()}


def _candidate_names(key: str, by_timm: dict[str, str] | None) -> list[str]:
    """The backbone keys a source key may stand for, most literal first; ``by_timm`` maps a
    timm backbone's full-model names to its own (None for other backbones)."""
    names = [key] + [key.removeprefix(p) for p in _CONTAINER_PREFIXES if key.startswith(p)]
    if by_timm is not None:  # timm's full names, or the features_only ones
        names += [f"body.{by_timm.get(n, n)}" for n in list(names)]
    return names


def map_to_backbone(
    source: dict[str, torch.Tensor], backbone: nn.Module, name: str = "weights"
) -> tuple[dict[str, torch.Tensor], InitReport]:
    """Source tensors renamed to ``backbone``'s keys where name and shape match (backbone key ->
    tensor), and what matched. A ViT position table of another grid size is resampled (bicubic,
    timm's rule)."""
    target = backbone.state_dict()
    by_timm = backbone.body_keys_by_timm_key() if isinstance(backbone, TimmBackbone) else None
    mapped: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in source.items():
        match = next((n for n in _candidate_names(key, by_timm) if n in target), None)
        if match is None:
            unexpected.append(key)
            continue
        if match == "pos_embed" and isinstance(backbone, ViTBackbone):
            value = _resampled_positions(value, backbone)
        if value.shape != target[match].shape:
            mismatched.append(match)
            continue
        mapped[match] = value
    missing = tuple(k for k in target if k not in mapped)
    modules = {_module_of(k) for k in target}
    backbone_like = frozenset(
        k for k in unexpected if any(_module_of(n) in modules for n in _candidate_names(k, by_timm))
    )
    report = InitReport(name, tuple(mapped), missing, tuple(unexpected), tuple(mismatched),
                        len(target), backbone_like)  # fmt: skip
    return mapped, report


def _module_of(key: str) -> str:
    """A key's top-level module (``layer4`` of ``layer4.1.conv1.weight``; a timm backbone's
    ``body.stages`` of ``body.stages.3.blocks.0...``)."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "body" else parts[0]


def _resampled_positions(table: torch.Tensor, backbone: ViTBackbone) -> torch.Tensor:
    """(1, prefix + g*g, D) position table -> the backbone's grid (unchanged when equal)."""
    if table.shape == backbone.pos_embed.shape or table.dim() != 3:
        return table
    grid = backbone.patch_embed.grid_size
    prefix = 0 if backbone.no_embed_class else backbone.num_prefix_tokens
    return resample_abs_pos_embed(table, list(grid), num_prefix_tokens=prefix)


def initialise_from(
    method: TeacherStudent, weights: str | Path, partial: bool = False
) -> InitReport:
    """Load ``weights`` into the student's and the teacher's backbones (running statistics
    included). WeightsError if fewer than :data:`MIN_LOADED_FRACTION` of the backbone's tensors
    match, or more than :data:`MAX_EXTRA_FRACTION` of them come extra (a bigger network);
    ``partial`` (``--init-partial``) skips these two checks."""
    source = read_init_weights(weights)
    student = method.student.get_submodule("backbone")
    mapped, report = map_to_backbone(source, student, str(weights))
    arch = getattr(student, "arch", type(student).__name__)
    loaded, total = report.counted(report.loaded), report.counted(report.loaded + report.missing)
    if not partial and report.fraction < MIN_LOADED_FRACTION:
        raise WeightsError(
            f"--init {weights}: only {loaded} of {total} {arch} backbone tensors match "
            f"({len(report.mismatched)} differ in shape, {len(report.unexpected)} unexpected): "
            f"are these {arch} weights? Pass weights of that architecture, choose --backbone, "
            "or add --init-partial to load only what matches"
        )
    extra = report.extra_backbone
    if not partial and report.counted(extra) > MAX_EXTRA_FRACTION * total:
        raise WeightsError(
            f"--init {weights}: holds {len(extra)} backbone tensors that {arch} lacks, beside "
            f"the {len(report.loaded)} of {report.total} it loads: the weights of a bigger "
            f"network? Pass {arch} weights, choose the --backbone they were trained with, or "
            "add --init-partial to load only what matches"
        )
    for network in (method.student, method.teacher):
        network.get_submodule("backbone").load_state_dict(mapped, strict=False)
    return report
