"""Name -> builder maps for methods, backbones, built-in scene sets, formats and layouts.

Registering a name twice is an error; looking up an unknown name lists the names that exist.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
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
# Filled by densessl.eval.protocols: name (the ``densessl eval`` sub-command) -> EvalProtocol.
EVAL_PROTOCOLS = Registry("evaluation protocol")
# Filled by the layout modules of densessl.eval.segmentation: name -> SegLayout.
SEG_LAYOUTS = Registry("segmentation layout")
# Filled by the generators of densessl.data: name -> class(num_images, image_size, seed).
SCENES = Registry("built-in scene set")


def module_names(package: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The modules of ``package`` (its ``*.py`` files, private and ``exclude`` ones left out),
    found without importing the package: what a command line lists without paying for torch."""
    spec = importlib.util.find_spec(package)
    folders = spec.submodule_search_locations if spec is not None else None
    return sorted(
        p.stem
        for folder in folders or ()
        for p in Path(folder).glob("*.py")
        if not p.stem.startswith("_") and p.stem not in exclude
    )


def method_names() -> list[str]:
    """Every method's name: each lives in ``densessl/methods/<name>.py`` and registers under
    its module's name (tests/test_methods.py holds the two equal)."""
    return module_names("densessl.methods", exclude=("base",))
