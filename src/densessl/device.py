"""The one place that turns a device name into a ``torch.device``.

Model code never names a device; the engine, the probes and the detection fine-tune ask here.
"""

from __future__ import annotations

import torch
from torch import nn

from densessl import dist
from densessl.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): this process's GPU under torchrun when CUDA is available, else the
    CPU. ``"cuda"``: this process's GPU, an error when there is none. ``"cpu"``, ``"cuda:N"``
    and ``torch.device`` objects are taken as they are."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for, but CUDA is not available; use cpu")
    if name == "cuda":
        return torch.device("cuda", dist.local_rank())
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu or cuda") from err


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer; the CPU for a stateless module."""
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return torch.device("cpu")
