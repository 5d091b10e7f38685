"""Name -> builder maps for methods, backbones, built-in scene sets, formats and layouts.

A registry is a plain dict with two guarantees: registering a name twice is an error (two
modules silently fighting over ``"densecl"`` is a bug), and looking up an unknown name lists
the names that exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from densessl.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError, KeyError):
    """A name no entry of the registry has (a KeyError too, for dict-like callers)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    """A named collection of builders: ``@REG.register("name")`` then ``REG.get("name")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


METHODS = Registry("method")
BACKBONES = Registry("backbone")
# Filled by the writer modules of densessl.export: name -> write(modules, out) -> ExportResult.
EXPORT_FORMATS = Registry("export format")
# Filled by the layout modules of densessl.eval.segmentation: name -> SegLayout.
SEG_LAYOUTS = Registry("segmentation layout")
# Filled by the generators of densessl.data: name -> class(num_images, image_size, seed).
SCENES = Registry("built-in scene set")
