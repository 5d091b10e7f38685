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
               weights, every key matched, with the constructor arguments printed. timm CNNs
               (``timm/<name>``): ``timm.create_model(name, num_classes=0)``, strict
smp            a segmentation_models_pytorch encoder (Unet, FPN, DeepLabV3+): ResNets under
               torchvision's names, timm CNNs as ``tu-<name>`` encoders (``model.*``)
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

from pathlib import Path

from densessl.errors import ExportError, OutputError, WeightsError

# The writers register their formats in EXPORT_FORMATS when imported.
from densessl.export import (  # noqa: F401
    detectron2,
    mmdet,
    smp,
    torchvision_detection,
    torchvision_format,
)
from densessl.export.result import ExportResult
from densessl.registry import EXPORT_FORMATS
from densessl.runs import LAST_CHECKPOINT, enclosing_run, open_run, refuse_run_file

__all__ = ["FORMATS", "ExportResult", "export"]

FORMATS = tuple(EXPORT_FORMATS.names())


# The file name written when ``out`` is a folder: <run>_<format><suffix>.
DEFAULT_SUFFIXES = {"detectron2": ".pkl", "safetensors": ".safetensors"}


def export(
    run: str | Path, fmt: str, out: str | Path, network: str | None = None, force: bool = False
) -> ExportResult:
    """Write the pretrained networks of ``run`` in format ``fmt`` to ``out``.

    Args:
        run: run directory or densessl checkpoint file.
        fmt: one of :data:`FORMATS`.
        out: output file, or an existing folder to write ``<run>_<fmt>.<ext>`` into; its
            parent folder is created. Written atomically.
        network: ``"online"`` or ``"teacher"``; None = the method's default.
        force: replace an existing file (never a checkpoint of the run itself).

    Returns:
        The written path and the instructions for the target library.

    Raises:
        ExportError: unknown format or network, missing or unreadable run, an existing ``out``
            without ``force``, an ``out`` inside the run's checkpoints, or a layout check that
            failed.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    if network not in (None, "online", "teacher"):
        raise ExportError(f"--network must be online or teacher, not {network!r}")
    target = export_target(run, fmt, Path(out), force)
    try:
        method, _ = open_run(run)
    except WeightsError as err:  # a missing run is, here, a run that cannot be exported
        raise ExportError(str(err)) from err
    return EXPORT_FORMATS.get(fmt)(method.exportable(network), target)


def export_target(run: str | Path, fmt: str, out: Path, force: bool) -> Path:
    """The file an export writes: ``out``, or a default name inside ``out`` when it is a folder.

    Raises:
        ExportError: the file would replace a checkpoint of ``run`` (never allowed), or exists
            and ``force`` is False.
        OutputError: the file would be one of a run's own files, or a name densessl chose
            inside a run folder (only a name the user gives may go there).
    """
    run, suffix = Path(run), DEFAULT_SUFFIXES.get(fmt, ".pt")
    if out.is_dir():
        if enclosing_run(out) is not None:
            raise OutputError(
                f"--out {out} is a run folder: give the export a file name of your own, e.g. "
                f"{out / ('backbone' + suffix)}"
            )
        out = out / f"{run.resolve().stem}_{fmt}{suffix}"
    refuse_run_file(out)
    # Never an export target: the checkpoint exported from, nor anything in RUN/checkpoints.
    checkpoints = run.parent if run.is_file() else run / LAST_CHECKPOINT.parent
    inside = checkpoints.name == LAST_CHECKPOINT.parent.name and checkpoints.resolve() in (
        out.resolve().parents
    )
    if out.resolve() == run.resolve() or inside:
        raise ExportError(
            f"--out {out} would overwrite a checkpoint of {run}; write the export outside "
            f"{checkpoints} (a folder as --out gets a default file name)"
        )
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; add --force to replace it, or pick another --out")
    return out
