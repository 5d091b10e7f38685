"""Method checkpoint -> downstream weights, with the exact key sets checked on the way out.

``densessl export RUN --format FORMAT --out FILE [--network online|teacher]``; the default
network is the method's ``export_network``; every format takes ImageNet-normalised RGB:

=============  ===================================================================================
torchvision    plain state dict; loads into ``torchvision.models.<arch>()`` missing only
               ``fc.weight``/``fc.bias``, and into a detection model's ``backbone.body``
torchvision_   backbone + FPN + box head (SoCo) in ``fasterrcnn/maskrcnn_resnet50_fpn_v2``
detection      names; only the RPN, the predictors and the mask branch are missing
timm           ResNets: the same file, strict with ``num_classes=0``; ViTs: timm
               ``VisionTransformer`` weights plus constructor arguments; timm CNNs
               (``timm/<name>``): ``timm.create_model(name, num_classes=0)``, strict
smp            a segmentation_models_pytorch encoder: ResNets in torchvision's names, timm CNNs
               as ``tu-<name>`` encoders (``model.*``)
detectron2     ``.pkl`` of numpy arrays, keys ``stem``/``res2..res5``/...; plus
               ``fpn_lateral/output{2..5}`` and ``box_head.conv{1..4}``/``fc1`` when pretrained
mmdet          ``{"state_dict": {"backbone.*": ...}, "meta": ...}``; plus ``neck.*`` and
               ``roi_head.bbox_head.*`` when pretrained
safetensors    the torchvision state dict as ``.safetensors``
=============  ===================================================================================
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
    """Write the pretrained networks of ``run`` in format ``fmt`` to ``out``; returns the written
    path and the instructions for the target library.

    Args:
        run: run directory or densessl checkpoint file.
        out: output file, or an existing folder for ``<run>_<fmt>.<ext>``; written atomically.
        network: ``"online"`` or ``"teacher"``; None = the method's default.
        force: replace an existing file (never a checkpoint of the run itself).

    ExportError for a bad format, network or run, an existing ``out`` without ``force``, or a
    failed layout check.
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
        ExportError: the file would replace a checkpoint of ``run``, or exists without ``force``.
        OutputError: the file would be a run's own file or a name densessl chose in a run folder.
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
