"""Pretraining methods, registered by name in :data:`densessl.registry.METHODS`."""

from densessl.methods import densecl, mocov2  # noqa: F401  (registration)
from densessl.methods.base import LossOutput, Method, MethodContext
from densessl.registry import METHODS


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


__all__ = ["LossOutput", "Method", "MethodContext", "get_method"]
