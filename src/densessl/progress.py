"""The one progress bar: tqdm on stderr with ETA and rate, on the main process only.

When stderr is a log file rather than a terminal the bar is redrawn every 30 s instead of twice a
second, so logs stay readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

from densessl import dist

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or, with None, advanced by ``update()``)."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        unit=unit,
        disable=not (enabled and dist.is_main()),
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
        file=sys.stderr,
    )
