"""densessl from Python: one function per command (the command line is a thin layer over these).

Each takes what its command takes (config layers: a method's defaults, a YAML ``config``, named
arguments, then ``key=value`` ``overrides``), returns a result object instead of printing, and
raises the one-line :class:`~densessl.errors.UserError` the command line prints (exit code 2).
:func:`evaluate` runs any registered protocol, :func:`components` is ``densessl list``::

    import densessl.api as ds

    run = ds.pretrain("densecl", out="runs/mine", steps=200, backbone="resnet18")
    ds.export(run.run_dir, "torchvision", "backbone.pt")
    print(ds.knn_seg(run.run_dir, k=10).miou)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from densessl.config import build_config, load_saved_config, merge_layers, validate
from densessl.errors import ConfigError, DataError
from densessl.registry import (
    BACKBONES,
    EVAL_PROTOCOLS,
    EXPORT_FORMATS,
    METHODS,
    SEG_LAYOUTS,
    method_names,
)

__all__ = [
    "components",
    "detect",
    "evaluate",
    "export",
    "finetune_seg",
    "knn_seg",
    "linear_seg",
    "pretrain",
]

# pretrain's named arguments -> the config keys they set (None = not given).
PRETRAIN_KEYS = {
    "data": "data.path",
    "backbone": "backbone",
    "init": "init",
    "image_size": "data.image_size",
    "batch_size": "batch_size",
    "steps": "steps",
    "epochs": "epochs",
    "workers": "data.workers",
    "device": "device",
    "init_partial": "init_partial",
}

# What --resume may change: the length (a run never moves backwards), how the data is fed, the
# device, and the logging and checkpoint intervals. Anything else would train another run.
RESUME_MAY_CHANGE = (
    "steps", "epochs", "data.workers", "device", "log_every", "checkpoint_every",
    "keep_checkpoints", "health_every", "out",
)  # fmt: skip


def components() -> dict[str, list[str]]:
    """The registered names of methods, backbones, export formats, protocols and layouts."""
    import densessl.eval.protocols
    import densessl.eval.segmentation
    import densessl.export
    import densessl.methods  # noqa: F401  (each registers its names on import)

    return {
        "methods": METHODS.names(),
        "backbones": BACKBONES.names(),
        "export formats": EXPORT_FORMATS.names(),
        "evaluation protocols": EVAL_PROTOCOLS.names(),
        "segmentation layouts": SEG_LAYOUTS.names(),
    }


def pretrain(
    method: str | None = None,
    *,
    out: str | Path | None = None,
    config: str | Path | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    **named: Any,
):
    """Pretrain (or, with ``resume``, continue) a run; ``densessl pretrain`` in Python.

    Args:
        method: a registered method; taken from the run when resuming.
        out: run folder (default ``runs/<method>``; required with ``resume``).
        config: YAML recipe; ``overrides``: ``key=value`` strings, applied last.
        **named: ``data``, ``backbone``, ``init``, ``image_size``, ``batch_size``, ``steps``,
            ``epochs``, ``workers``, ``device`` (see ``densessl pretrain --help``).

    Returns ``RunResult`` (``run_dir``, ``steps``, ``final_loss`` (None if not finite),
    ``skipped_files``); raises UserError naming what is wrong and what to do.
    """
    from densessl.console import setup_console_logging

    setup_console_logging(is_main=int(os.environ.get("RANK", "0")) == 0)
    cfg = pretrain_config(method, out=out, config=config, resume=resume, overrides=overrides,
                          **named)  # fmt: skip
    from densessl.engine.train import train  # torch: after the command line was checked

    return train(cfg, resume=resume)


def pretrain_config(
    method: str | None = None,
    *,
    out: str | Path | None = None,
    config: str | Path | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    **named: Any,
):
    """The validated run config :func:`pretrain` trains (arguments as there), nothing run."""
    unknown = sorted(set(named) - set(PRETRAIN_KEYS))
    if unknown:
        raise ConfigError(f"unknown argument {unknown[0]!r}; known: {', '.join(PRETRAIN_KEYS)}")
    epochs = _checked_length(named.get("steps"), named.get("epochs"))
    flags = {key: named.get(name) for name, key in PRETRAIN_KEYS.items()}
    if epochs is not None:
        flags["steps"] = 0  # 0 steps in the config = derive them from the epochs
    flags["out"] = None if out is None else str(out)
    overrides = list(overrides)
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        if named.get("init"):
            raise ConfigError("--init starts a new run from weights; --resume continues one")
        saved = Path(out) / "config.yaml"
        if not saved.exists():
            raise ConfigError(f"nothing to resume: {saved} does not exist; check --out")
        import densessl.methods  # noqa: F401  (the methods register their schemas)

        previous = load_saved_config(saved)
        if method and method != previous.method.name:
            raise ConfigError(f"{out} is a {previous.method.name} run, not {method}")
        cfg = merge_layers(previous.copy(), config, flags, overrides)
        validate(cfg)
        return _checked(_resumable(previous, cfg, saved))
    if not method:
        raise ConfigError(f"choose a method: --method {' | '.join(method_names())}")
    if method not in method_names():  # before importing any method: a typo answers at once
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(method_names())}")
    from densessl.methods import get_method

    flags["out"] = flags["out"] or f"runs/{method}"
    cfg = _checked(build_config(get_method(method), config, flags, overrides))
    if (Path(cfg.out) / "checkpoints" / "last.pt").exists():
        raise ConfigError(
            f"{cfg.out} already holds a run; add --resume to continue it or pick another --out"
        )
    return cfg


def _resumable(previous: DictConfig, cfg: DictConfig, saved: Path) -> DictConfig:
    """``cfg`` when it changes only what :data:`RESUME_MAY_CHANGE` names (each change logged),
    else ConfigError listing every other entry that differs from the run's ``config.yaml``."""
    import logging

    before, after = _flat(previous), _flat(cfg)
    changed = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if refused:
        listed = ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in refused)
        raise ConfigError(
            f"--resume continues the run as it was configured in {saved}, but these differ: "
            f"{listed}; drop them (only --steps/--epochs, --workers, --device, log_every, "
            "checkpoint_every, keep_checkpoints and health_every may change), or start a new "
            "run with another --out"
        )
    for key in changed:
        if key not in ("out", "steps", "epochs"):  # the length is in the run's first line
            logging.getLogger("densessl").info(
                "resuming with %s %r (was %r)", key, after.get(key), before.get(key)
            )
    return cfg


def _flat(cfg: DictConfig) -> dict[str, Any]:
    """Every leaf of a config by its dotted key."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _checked_length(steps: int | None, epochs: float | None) -> float | None:
    """Refuse a run length that cannot be meant; returns ``epochs``."""
    if steps is not None and epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give at least 1 step (or leave it out for --epochs)")
    if epochs is not None and not epochs > 0:
        raise ConfigError(f"--epochs {epochs}: give a positive number of passes over the data")
    return epochs


def _checked(cfg):
    """Names that only the registries know, checked before anything is built or written."""
    from densessl.models.timm_backbone import PREFIX as TIMM_PREFIX

    if not cfg.backbone.startswith(TIMM_PREFIX):  # timm names are checked when built
        BACKBONES.get(cfg.backbone)  # an unknown name is a one-line ConfigError listing the known
    return cfg


def health(run: str | Path) -> tuple[str, bool]:
    """A run's last health check beside its first, and whether it is healthy; DataError if
    ``run`` has no metrics, or no health check in them."""
    from densessl.health import health_report
    from densessl.runs import METRICS_NAME, read_metrics

    path = Path(run) / METRICS_NAME
    if not path.is_file():
        raise DataError(f"{path} not found; pass a run folder that has trained")
    records = read_metrics(run)
    if not any("effective_rank" in r for r in records):
        raise DataError(
            f"{path} holds no health check: the run was trained with health_every=-1, by a "
            "densessl without health checks, or stopped before its first; resume it with "
            "more --steps to get one"
        )
    return health_report(records)


def export(
    run: str | Path,
    format: str,
    out: str | Path,
    network: str | None = None,
    force: bool = False,
):
    """Write a run's pretrained networks for a downstream library (``densessl export``); returns
    ``ExportResult``: ``path``, ``instructions`` (the loading code), ``num_tensors``."""
    from densessl.export import export as write_export

    return write_export(run, format, out, network, force)


def evaluate(protocol: str, weights: str | Path, data: str | Path | None = None, **kwargs: Any):
    """Run the evaluation protocol ``protocol`` (``densessl eval <protocol>``; ``densessl list``
    names them) and return its scores; ``kwargs`` are its keywords (see each protocol's
    ``evaluate`` in :mod:`densessl.eval.protocols`)."""
    from densessl.eval.protocols import EVAL_PROTOCOLS

    return EVAL_PROTOCOLS.get(protocol).evaluate(weights, data, **kwargs)


def linear_seg(weights: str | Path, data: str | Path | None = None, **kwargs: Any):
    """Linear per-pixel probe on frozen features (``densessl eval linear-seg``); arguments as
    :func:`knn_seg`. Returns ``SegmentationScores`` (``miou``, ``per_class_iou`` ...)."""
    return evaluate("linear-seg", weights, data, **kwargs)


def knn_seg(weights: str | Path, data: str | Path | None = None, **kwargs: Any):
    """Dense k-NN label retrieval, no training (``densessl eval knn-seg``): SegmentationScores.

    Args:
        weights: run folder, checkpoint, exported file, or ``"random"``.
        data: labelled folder; None = held-out built-in scenes.
        **kwargs: ``format``, ``split``, ``train_split``, ``labels`` (``"10%"`` or a count),
            ``backbone``, ``network``, ``config``, ``overrides``, any ``KnnSegOptions`` field.
    """
    return evaluate("knn-seg", weights, data, **kwargs)


def finetune_seg(weights: str | Path, data: str | Path | None = None, **kwargs: Any):
    """Fine-tune a segmenter from ``weights`` and from each ``compare`` init on a labelled
    subset, over seeds, and compare (``densessl eval finetune-seg``): keywords ``compare``,
    ``labels``, ``seeds``, ``format``, ``split``, ``train_split``, ``backbone``, ``network``,
    ``config``, ``overrides`` and any ``FinetuneSegOptions`` field. Returns ``Comparison``."""
    return evaluate("finetune-seg", weights, data, **kwargs)


def detect(weights: str | Path, data: str | Path | None = None, **kwargs: Any):
    """Fine-tune torchvision Faster/Mask R-CNN and score COCO AP (``densessl eval detect``):
    keywords ``backbone``, ``network``, ``config``, ``overrides`` and any ``DetectOptions``
    field. Returns ``DetectionScores``."""
    return evaluate("detect", weights, data, **kwargs)
