"""What an export wrote; its own module so that the writers and ``densessl.export`` share it
without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportResult:
    """What :func:`densessl.export.export` wrote (``path``, ``num_tensors``) and the
    ``instructions`` (loading code or config lines) for the target library."""

    path: Path
    instructions: str
    num_tensors: int
