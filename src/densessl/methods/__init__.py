"""Pretraining methods, registered by name in :data:`densessl.registry.METHODS`."""

from omegaconf import DictConfig, OmegaConf

# Imported for their registration side effect.
from densessl.methods import byol, densecl, dino, mcl, mocov2, pixpro, selfpatch, soco  # noqa: F401
from densessl.methods.base import LossOutput, Method, MethodContext, StepState, TeacherStudent
from densessl.registry import METHODS


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


def build_method(cfg: DictConfig) -> Method:
    """The configured method, with fresh weights from torch's global generator."""
    method_cls = get_method(cfg.method.name)
    ctx = MethodContext(
        backbone=cfg.backbone,
        image_size=cfg.data.image_size,
        batch_norm=cfg.batch_norm,
        seed=cfg.seed,
        keys_per_step=cfg.batch_size // cfg.accum_steps,
    )
    return method_cls(OmegaConf.to_object(cfg.method), ctx)


__all__ = [
    "LossOutput",
    "Method",
    "MethodContext",
    "StepState",
    "TeacherStudent",
    "build_method",
    "get_method",
]
