"""The shipped recipes: one YAML per recipe, package data, found by name (``--config
densecl_small_data``); an existing file path wins over a name. A file's first comment line is
its purpose (``densessl list``).
"""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent
SUFFIX = ".yaml"


def recipe_names() -> list[str]:
    """Every shipped recipe's name (its file name without ``.yaml``), sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob(f"*{SUFFIX}"))


def shipped_recipe(name: str | Path) -> Path | None:
    """The shipped file ``name`` stands for (with or without ``.yaml``), or None."""
    text = str(name)
    if "/" in text or "\\" in text:
        return None
    path = RECIPES_DIR / (text if text.endswith(SUFFIX) else text + SUFFIX)
    return path if path.is_file() else None


def resolve_recipe(config: str | Path) -> Path:
    """``config`` as a path when that file exists, else the shipped recipe of that name; the
    path as given when neither exists (the caller reports it)."""
    path = Path(config)
    if path.is_file():
        return path
    return shipped_recipe(config) or path


def purpose(path: Path) -> str:
    """A recipe's one-line purpose: its first comment line, up to ': ' or ' ('."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            for stop in (": ", " ("):
                text = text.split(stop, 1)[0]
            return text.rstrip(".")
    return ""


def shipped_recipes() -> dict[str, str]:
    """name -> purpose of every shipped recipe."""
    return {name: purpose(RECIPES_DIR / f"{name}{SUFFIX}") for name in recipe_names()}
