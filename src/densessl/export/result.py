"""What an export wrote; its own module so that the writers and ``densessl.export`` share it
without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportResult:
    """What :func:`densessl.export.export` wrote and how to use it.

    Attributes:
        path: the written file.
        instructions: the loading code or config lines for the target library, ready to print.
        num_tensors: tensors in the file.
    """

    path: Path
    instructions: str
    num_tensors: int
