"""Everything one training run holds, built once from its config (MAE's split: setup here,
the loop in :mod:`densessl.engine.train`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from densessl import dist
from densessl.console import setup_console_logging
from densessl.data.batch import Batch
from densessl.data.sampler import check_enough_images
from densessl.device import resolve_device
from densessl.engine import checkpoint as ckpt
from densessl.engine.fast_path import apply_memory_format, compile_networks, resolve_memory_format
from densessl.engine.health_check import health_interval, held_batch
from densessl.engine.init_weights import initialise_from
from densessl.engine.interrupts import signals_deferred
from densessl.engine.logging import MetricsWriter, Throughput, log
from densessl.engine.optim import build_optimizer
from densessl.engine.run_folder import (
    RunLock,
    check_out_folder,
    mark_run_folder,
    sweep_orphan_temporaries,
)
from densessl.engine.setup import (
    build_loader,
    build_method_checked,
    build_source,
    micro_batch,
    optim_schedules,
    resolve_precision,
    steps_per_epoch,
    total_steps,
)
from densessl.errors import ConfigError, StorageError
from densessl.methods import Method
from densessl.models.norm import convert_batchnorm
from densessl.progress import progress
from densessl.runs import LAST_CHECKPOINT, load_method_weights, read_checkpoint
from densessl.schedules import RunLength, Schedule


@dataclass
class Session:
    """A run's objects and counters.

    Attributes:
        method: the method itself; ``model`` is what the step calls (DDP-wrapped under torchrun).
        schedules: lr and weight decay (the engine's) plus the method's, by declared name.
    """

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    method: Method
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    run: RunLength
    schedules: dict[str, Schedule]
    batches: Iterator[Batch]
    start_step: int
    skipped: set[str] = field(default_factory=set)
    metrics: MetricsWriter | None = None
    bar: object = None
    throughput: Throughput = field(default_factory=Throughput)
    lock: RunLock | None = None
    memory_format: torch.memory_format = torch.contiguous_format  # of the weights and the views
    saved_step: int | None = None  # step of the last checkpoint written (None: none yet)
    held: torch.Tensor | None = None  # the health checks' images (main process only)
    view_dtype: torch.dtype = torch.float32  # of the augmented views: float64 under fp64
    health_every: int = 0  # steps between health checks, the same in every process; 0: none
    health_signs: dict[str, str] = field(default_factory=dict)  # the last check's collapse signs
    health_values: dict[str, float] = field(default_factory=dict)  # the last check's measures

    def save(self, step: int) -> Path | None:
        """The full training state at ``step`` (main process only; None elsewhere); signals wait
        for the write. StorageError if it fails (a full disk); the previous checkpoint is intact.
        """
        if not dist.is_main():
            return None
        payload = {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data_position": {"micro_batches": step * self.cfg.accum_steps},
            "skipped_files": sorted(self.skipped),
        }
        with signals_deferred():
            try:
                path = ckpt.save_training_state(
                    self.run_dir, step, payload, self.cfg.keep_checkpoints
                )
            except OSError as err:
                raise StorageError(
                    f"could not write the checkpoint of step {step} in {self.run_dir}: "
                    f"{err.strerror or err}; {self.intact()}"
                ) from err
            self.saved_step = step
        return path

    def intact(self) -> str:
        """Which saved state a stopped run continues from, in words."""
        if self.saved_step is None:
            return "no checkpoint was written yet, so the run starts again from step 0"
        return (
            f"the checkpoint of step {self.saved_step} ({self.run_dir / LAST_CHECKPOINT}) is "
            "intact: continue with --resume"
        )

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
        # The loader's workers stop now, not at interpreter exit, even when an error's
        # traceback still holds the loader's iterator.
        shutdown_workers = getattr(self.batches, "_shutdown_workers", None)
        if shutdown_workers is not None:
            shutdown_workers()
        self.batches = iter(())

    def release(self) -> None:
        """Free the run folder for the next process (after the summary is written)."""
        if self.lock is not None:
            self.lock.release()


def open_session(cfg: DictConfig, resume: bool = False) -> Session:
    """Build the run ``cfg`` describes, restored from its last checkpoint when ``resume``.

    Every check comes before the first write, so a refused run leaves the disk as it was: check
    the folder, lock it (:class:`RunLock`, until :meth:`Session.release`), build and restore,
    and only then mark and sweep the folder and write config and metrics. UserError if the
    folder is in use or not densessl's, fewer steps than the checkpoint has done, a backbone
    unfit for the method, or any other check fails.
    """
    device = resolve_device(cfg.device)
    dist.init(device.type)
    setup_console_logging(dist.is_main())
    run_dir = Path(cfg.out)
    check_out_folder(run_dir, resume)
    lock = RunLock(run_dir).acquire() if dist.is_main() else None
    try:
        s = _build_session(cfg, resume, device, run_dir)
    except BaseException:
        if lock is not None:
            lock.abandon()
        raise
    s.lock = lock
    return s


def _build_session(cfg: DictConfig, resume: bool, device: torch.device, run_dir: Path) -> Session:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    state = read_checkpoint(run_dir) if resume else None
    source = build_source(cfg)
    check_enough_images(len(source), micro_batch(cfg) * dist.world_size())
    run = RunLength(total_steps(cfg, len(source)), steps_per_epoch(cfg, len(source)))
    if state is not None and int(state["step"]) > run.total_steps:
        raise ConfigError(
            f"{run_dir} is already at step {int(state['step'])}, past the {run.total_steps} "
            f"steps asked for: a run never moves backwards; ask for at least "
            f"--steps {int(state['step'])}, or start a new run with another --out"
        )
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    method = build_method_checked(cfg)
    if cfg.init and state is None:  # a resumed run restores its own weights below
        log.info("%s", initialise_from(method, cfg.init, cfg.init_partial).line())
    if cfg.batch_norm == "sync" and dist.world_size() > 1:
        method = convert_batchnorm(method, "torch_sync" if device.type == "cuda" else "sync")
    view_dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
    method.to(device, view_dtype)
    memory_format = resolve_memory_format(cfg)
    apply_memory_format(method, memory_format)
    optimizer = build_optimizer(method.named_parameters(), cfg.optim)
    autocast_dtype = resolve_precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    start_step, skipped = 0, set()
    if state is not None:
        start_step, skipped = _restore(state, method, optimizer, scaler, cfg.backbone)
    metrics = MetricsWriter(run_dir, start_step, enabled=dist.is_main())  # reads: may refuse
    _log_start(cfg, device, len(source), run, start_step)
    if dist.is_main():  # every check passed: the first writes
        with signals_deferred():
            mark_run_folder(run_dir)
            sweep_orphan_temporaries(run_dir)
            text = OmegaConf.to_yaml(cfg).encode()
            ckpt.atomic_write(run_dir / "config.yaml", lambda f: f.write(text))
            metrics.start()
    schedules = {**optim_schedules(cfg, run.steps_per_epoch), **method.schedules()}
    _warn_if_queue_outlasts_epoch(cfg, len(source))
    if cfg.compile:
        log.info("torch.compile: %s (the first steps compile)", ", ".join(compile_networks(method)))
    model: torch.nn.Module = method
    if dist.world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        # Queues are buffers: broadcasting them every step would cost far more than the step.
        model = DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)
    loader = build_loader(cfg, source, method, device, start_step * cfg.accum_steps)
    batches = iter(loader)  # draws the loader's base seed from torch's global generator
    # Every process knows the check steps (their records hold collectives); one measures.
    held, health_every = None, 0
    if cfg.health_every >= 0:
        health_every = health_interval(cfg.health_every, run.steps_per_epoch)
        if dist.is_main():
            held = held_batch(source, cfg.data.image_size)
            held = (
                held
                if held is None
                else held.to(device, view_dtype).contiguous(memory_format=memory_format)
            )
    if state is not None:
        # Restored last, after every draw of the setup, so that the resumed steps draw what the
        # straight run drew (stochastic depth, montage placement).
        ckpt.set_rng_state(state["rng"])
    return Session(
        cfg, run_dir, device, method, model, optimizer, scaler, autocast_dtype, run, schedules,
        batches, start_step, skipped, metrics=metrics,
        bar=progress(total=run.total_steps, initial=start_step, unit="step"),
        memory_format=memory_format, saved_step=start_step if state is not None else None,
        held=held, health_every=health_every, view_dtype=view_dtype,
    )  # fmt: skip


def _restore(state: dict, method, optimizer, scaler, backbone: str) -> tuple[int, set[str]]:
    """Load a checkpoint's weights, optimizer and scaler; its step and skipped files."""
    load_method_weights(method, state["model"], backbone)
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    return int(state["step"]), set(state["skipped_files"])


def _warn_if_queue_outlasts_epoch(cfg: DictConfig, images: int) -> None:
    """A key queue longer than one epoch holds older keys of each query's own image, which the
    contrastive loss then treats as negatives (the small-data pitfall of mmpretrain#1541)."""
    queue = cfg.method.get("queue_size")
    if dist.is_main() and queue and images and queue > images:
        log.warning(
            "method.queue_size=%d holds more keys than the %d images of one epoch, so older keys "
            "of each image come back as its negatives; set method.queue_size to at most %d",
            queue, images, images,
        )  # fmt: skip


def _log_start(cfg: DictConfig, device, images: int, run: RunLength, start_step: int) -> None:
    """The run's first line: where it writes, and what it trains."""
    resumed = f" (resumed at step {start_step})" if start_step else ""
    log.info(
        "run folder %s%s: %s on %s, %s, %d process(es), %d images, %d steps, batch %d, "
        "lr %.4g (base %.4g)",
        cfg.out, resumed, cfg.method.name, device, cfg.backbone, dist.world_size(), images,
        run.total_steps, cfg.batch_size, cfg.optim.base_lr * cfg.batch_size / 256,
        cfg.optim.base_lr,
    )  # fmt: skip
