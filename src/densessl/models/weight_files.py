"""Reading user weight files: ``.pt``/``.pth`` with ``weights_only=True``, ``.safetensors``
without pickle, and unwrapping the containers training scripts save state dicts in (shared by
:mod:`densessl.eval.weights` and :mod:`densessl.engine.init_weights`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from densessl.errors import WeightsError

STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")
# A DataParallel / DDP wrapper, or a detector / segmenter / method that holds a backbone.
_WRAPPER_PREFIXES = ("module.", "backbone.")


def read_weights_file(path: Path) -> Any:
    """The contents of a ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors`` file;
    :class:`WeightsError` naming the file and why if unreadable."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise WeightsError(f"cannot read {path} as safetensors: {err}") from err
    return load_torch_file(path)


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure one WeightsError line
    of ours (torch's suggests ``weights_only=False``, unsafe for untrusted files)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, unpickling and EOF errors share no base class
        if isinstance(err, pickle.UnpicklingError) and "Weights only" in str(err):
            raise WeightsError(
                f"{path} holds Python objects other than tensors and plain containers; densessl "
                "refuses to unpickle them (a file from an untrusted source could run code): "
                "re-export it as a plain state dict or .safetensors"
            ) from err
        reason = "truncated or damaged" if path.stat().st_size else "empty"
        raise WeightsError(
            f"{path} is not a readable torch file ({reason}); re-export or re-train it, or "
            "point at another checkpoint"
        ) from err


def unwrap_state_dict(state: Any) -> dict[str, torch.Tensor]:
    """Plain backbone keys from a possibly wrapped or prefixed state dict, ``fc.*`` dropped:
    ``{"state_dict": sd}`` / ``{"model": sd}`` unwrapped, ``module.`` stripped, and when some
    keys start with ``backbone.`` only those, stripped (:class:`WeightsError` if not a mapping
    from names to tensors)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state:
        raise WeightsError("not a state dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError("not a state dict (values must all be tensors)")
    for prefix in _WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
