"""Pretraining methods, registered by name in :data:`densessl.registry.METHODS`."""

# Imported for their registration side effect.
from densessl.methods import byol, densecl, dino, mcl, mocov2, selfpatch, soco  # noqa: F401
from densessl.methods.base import LossOutput, Method, MethodContext, StepState, TeacherStudent
from densessl.registry import METHODS


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


__all__ = [
    "LossOutput",
    "Method",
    "MethodContext",
    "StepState",
    "TeacherStudent",
    "get_method",
]
