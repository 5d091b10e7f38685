"""Run configuration: dataclass defaults -> YAML recipe -> named flags -> key=value overrides.

Defaults are the paper recipe (:class:`TrainConfig`, or ``Method.run_defaults`` with its
``Method.Config``); a YAML recipe states only differences; named flags are shorthand for
``key=value``. The result goes to ``RUN/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from densessl.errors import ConfigError
from densessl.recipes import resolve_recipe
from densessl.registry import METHODS


@dataclass
class DataConfig:
    path: str | None = None  # folder of images (recursive); None = the built-in synthetic scenes
    image_size: int = 224  # side of each training view (paper: 224)
    workers: int = 4  # data-loading processes per training process, at most the cores
    synthetic_images: int = 2048  # size of the built-in scene set
    synthetic_size: int = 256  # side of a built-in scene before cropping
    scenes: str = "shapes"  # which built-in scene set: shapes | aerial (densessl.data.built_in)
    augment_on: str = "auto"  # photometric augmentation in "worker", on "device", or "auto"
    reduced_decode: bool = True  # JPEG: decode at 1/2, 1/4, 1/8 when every crop is down-sampled
    decode: str = "cpu"  # cpu: PIL in the workers | gpu: nvJPEG on the training GPU (else cpu)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | lars | adamw
    base_lr: float = 0.03  # lr for a batch of 256; lr = base_lr * batch_size / 256 (MoCo-v2: 0.03)
    momentum: float = 0.9  # SGD/LARS momentum
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 1e-4  # MoCo-v2 / DenseCL: 1e-4
    decay_norm_and_bias: bool = True  # the DenseCL reference decays every parameter
    lars_eta: float = 0.001  # LARS trust coefficient
    # trust_on_update (BYOL, SoCo, PixPro) | lr_in_buffer (MCL's OpenSelfSup; engine/optim.py)
    lars_variant: str = "trust_on_update"
    schedule: str = "cosine"  # cosine | constant | cosine_times_warmup (mmcv's, see schedules.py)
    warmup_ratio: float = 0.0  # cosine_times_warmup only: warm-up factor at step 0 (mmcv's)
    warmup_steps: int = 0  # linear warm-up; DenseCL uses none
    warmup_epochs: float = 0.0  # alternative to warmup_steps, converted with steps per epoch
    min_lr: float = 0.0  # cosine floor
    clip_grad: float = 0.0  # max gradient norm; 0 disables (reference: none)
    clip_mode: str = "global"  # global: one norm over all grads | per_param: each tensor (DINO)
    weight_decay_end: float | None = None  # cosine weight decay to this value; None = constant
    implementation: str = "auto"  # auto (fused, else foreach) | fused | foreach | loop


@dataclass
class TrainConfig:
    method: Any = None  # filled with the chosen method's Config (``name`` plus its parameters)
    backbone: str = "resnet50"
    init: str | None = None  # backbone weights to continue from (--init): file, export or run
    init_partial: bool = False  # --init-partial: load the tensors that match, however few or many
    batch_size: int = 256  # global batch per optimizer step, over all processes and accumulation
    steps: int = 0  # optimizer steps; 0 = derive from epochs
    epochs: float = 200.0  # used when steps == 0
    accum_steps: int = 1  # gradient accumulation micro-steps per optimizer step
    batch_norm: str = "shuffle"  # shuffle (MoCo shuffle-BN on keys) | sync | local
    # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 | fp64 (weights and views in float64:
    # reference runs that must agree across CPUs, such as the golden record; slow)
    precision: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    memory_format: str = "auto"  # auto (channels_last on CNNs) | channels_last | contiguous
    compile: bool = False  # torch.compile the student's and teacher's parts (opt-in)
    seed: int = 0
    out: str = "runs/latest"
    log_every: int = 10
    health_every: int = 0  # steps between health checks (densessl.health); 0: 1/4 epoch, -1: none
    checkpoint_every: int = 500  # steps between full-state checkpoints (plus one at the end)
    keep_checkpoints: int = 0  # step-numbered copies kept beside last.pt; 0 keeps only last.pt
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class LARSConfig(OptimConfig):
    """LARS as BYOL, SoCo and MCL train with it: no decay and no adaptation of 1-D parameters,
    10 warm-up epochs (learning rate and weight decay differ by method)."""

    name: str = "lars"
    decay_norm_and_bias: bool = False
    warmup_epochs: float = 10.0


def lars_run(batch_size: int, epochs: float, **optim: Any) -> TrainConfig:
    """The engine settings of the BYOL family (BYOL, SoCo, MCL): ResNet-50, synchronised batch
    norm, :class:`LARSConfig` with the paper's ``optim`` values."""
    return TrainConfig(
        backbone="resnet50",
        batch_size=batch_size,
        epochs=epochs,
        batch_norm="sync",
        optim=LARSConfig(**optim),
    )


def build_config(
    method_cls: type,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """Merge the layers of the module docstring into one validated run config; ``method_cls``
    gives the defaults (``run_defaults``) and the ``method`` dataclass (``Config``)."""
    method_name = method_cls.Config.name
    config_file = None if config_file is None else resolve_recipe(config_file)
    try:
        cfg = OmegaConf.structured(method_cls.run_defaults)
        cfg.method = OmegaConf.structured(method_cls.Config)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid configuration: {str(err).splitlines()[0]}") from err
    if config_file is not None:
        file_method = _load_yaml(config_file).get("method")
        recipe_for = file_method.get("name", method_name) if file_method else method_name
        if recipe_for != method_name:
            raise ConfigError(
                f"{config_file} is a recipe for {recipe_for!r}, not for {method_name!r}"
            )
    cfg = merge_layers(cfg, config_file, flags, overrides)
    validate(cfg)
    return cfg


def build_options(
    schema: type,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """Any options dataclass (evaluation, detection ...) through the same layers as a run:
    its defaults, then a YAML file, the named flags and ``key=value`` overrides."""
    try:
        base = OmegaConf.structured(schema)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid configuration: {str(err).splitlines()[0]}") from err
    return merge_layers(base, config_file, flags, overrides)


def merge_layers(
    cfg: DictConfig,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """``cfg`` <- YAML file <- named flags (``{"data.path": x}``; None = not given) <-
    ``key=value`` overrides. Unknown keys and wrong types raise a one-line ConfigError.
    ``config_file`` is a path, or the name of a shipped recipe (:mod:`densessl.recipes`)."""
    config_file = None if config_file is None else resolve_recipe(config_file)
    try:
        if config_file is not None:
            cfg = OmegaConf.merge(cfg, _load_yaml(config_file))
        if flags:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(_nest(flags)))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must look like key=value, got {bad[0]!r}")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err, config_file)) from err
    return cfg


def _one_line(err: OmegaConfBaseException, config_file: str | Path | None) -> str:
    """OmegaConf's error as one line that names the key and the fix."""
    reason = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    source = f" ({config_file}, the flags or the key=value overrides)" if config_file else ""
    if not key:
        return f"invalid configuration{source}: {reason}"
    if isinstance(err, ConfigKeyError):
        return f"unknown key {key}{source}: check its spelling against the config.yaml of a run"
    return f"invalid value for {key}{source}: {reason}; give {key} a value of its type"


def _load_yaml(path: str | Path) -> DictConfig:
    if not Path(path).is_file():
        raise ConfigError(
            f"config file not found: {path}, and no shipped recipe has that name; "
            "densessl list shows the shipped recipes"
        )
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml's errors span several lines; keep the first
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path} is not valid YAML: {first}; fix the file") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigError(
            f"{path} must hold key: value entries (a recipe), not a {type(loaded).__name__}"
        )
    method = loaded.get("method")
    if method is not None and not isinstance(method, DictConfig):
        raise ConfigError(f"{path}: 'method' must be a mapping such as 'method: {{name: densecl}}'")
    return loaded


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"data.path": x} -> {"data": {"path": x}}, skipping None values (flag not given)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# The LARS variants' former names, which the config files of earlier runs hold.
FORMER_LARS_VARIANTS = {"byol": "trust_on_update", "openselfsup": "lr_in_buffer"}


def validate(cfg: DictConfig) -> None:
    variant = OmegaConf.select(cfg, "optim.lars_variant")
    if variant in FORMER_LARS_VARIANTS:
        cfg.optim.lars_variant = FORMER_LARS_VARIANTS[variant]
    choices = {
        "batch_norm": ("shuffle", "sync", "local"),
        "precision": ("auto", "fp32", "bf16", "fp16", "fp64"),
        "device": ("auto", "cpu", "cuda"),
        "optim.name": ("sgd", "lars", "adamw"),
        "optim.schedule": ("cosine", "constant", "cosine_times_warmup"),
        "optim.lars_variant": ("trust_on_update", "lr_in_buffer"),
        "optim.clip_mode": ("global", "per_param"),
        "data.augment_on": ("auto", "worker", "device"),
        "data.decode": ("cpu", "gpu"),
        "memory_format": ("auto", "channels_last", "contiguous"),
        "optim.implementation": ("auto", "fused", "foreach", "loop"),
    }
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in ("batch_size", "accum_steps", "data.image_size", "log_every", "checkpoint_every"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1")
    if cfg.health_every < -1:
        raise ConfigError(
            f"health_every={cfg.health_every}: give -1 (no checks), 0 (a quarter epoch) or more"
        )
    for key in ("data.workers", "keep_checkpoints", "data.synthetic_images"):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"{key} must be 0 or more, not {OmegaConf.select(cfg, key)}")
    if cfg.steps < 0 or (cfg.epochs <= 0 and cfg.steps == 0):
        raise ConfigError("give a positive number of --steps or --epochs")
    _validate_ranges(cfg)


# Numeric settings torch or the schedules would refuse mid-run: (key, low, high, what they mean)
RANGES = (
    ("optim.base_lr", 0.0, None, "a learning rate per 256 images"),
    ("optim.min_lr", 0.0, None, "the cosine floor"),
    ("optim.weight_decay", 0.0, None, "a decay factor"),
    ("optim.momentum", 0.0, 1.0, "a momentum"),
    ("optim.warmup_steps", 0, None, "a number of steps"),
    ("optim.warmup_epochs", 0.0, None, "a number of epochs"),
    ("optim.warmup_ratio", 0.0, 1.0, "a factor"),
    ("optim.clip_grad", 0.0, None, "a gradient norm (0 disables)"),
    ("optim.lars_eta", 0.0, None, "a trust coefficient"),
)


def _validate_ranges(cfg: DictConfig) -> None:
    """Refuse values outside their meaning before anything runs (one line naming the key)."""
    for key, low, high, meaning in RANGES:
        value = OmegaConf.select(cfg, key)
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{key}={value} is not {meaning}: give a value {span}")
    for index, beta in enumerate(cfg.optim.betas):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"optim.betas[{index}]={beta}: AdamW's betas lie in [0, 1)")
    decay_end = cfg.optim.weight_decay_end
    if decay_end is not None and decay_end < 0:
        raise ConfigError(f"optim.weight_decay_end={decay_end}: give a decay of at least 0")


def load_saved_config(path: Path) -> DictConfig:
    """Reload a run's resolved config against the schema of its method."""
    raw = _load_yaml(path)
    return build_config(METHODS.get(raw.method.name), config_file=path)
