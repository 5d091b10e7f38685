"""The saved state of one fine-tune, so that an interrupted run continues where it stopped.

The file holds the segmenter's weights, AdamW's moments, the next step, the losses so far and
torch's RNG (the decoder's dropout), written atomically: the old file or the whole new one.
The training crops are a function of (seed, position) alone, so the loader simply starts at the
saved step, and the continued run is the one never stopped (bit for bit where the kernels are
deterministic, as on a CPU).
A finished run keeps its final weights (without the optimizer), so a rerun only scores them.

A fingerprint of the recipe, the labelled images and the starting weights (the backbone and the
seeded decoder) refuses a file that another fine-tune saved.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densessl.engine.checkpoint import atomic_save
from densessl.errors import ConfigError, WeightsError
from densessl.models.state_digest import state_digest

# Fields that do not change what a run computes: a run may continue with other values.
NEUTRAL_OPTIONS = ("device", "workers")


@dataclass(frozen=True)
class FinetuneState:
    """Where one fine-tune keeps its state, and the fingerprint that state must carry."""

    path: Path
    fingerprint: str

    @classmethod
    def of_run(
        cls, path: str | Path, options: Any, train_images: list[str], model: nn.Module
    ) -> FinetuneState:
        """The state of the run that trains ``model`` (as built, before any step) with
        ``options`` (a dataclass) on ``train_images`` (their descriptions)."""
        recipe = {k: v for k, v in asdict(options).items() if k not in NEUTRAL_OPTIONS}
        identity = json.dumps({"recipe": recipe, "images": train_images}, sort_keys=True)
        fingerprint = hashlib.sha256(f"{identity} {state_digest(model)}".encode()).hexdigest()
        return cls(Path(path), fingerprint)

    def load(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[int, list[float], dict[str, Any] | None]:
        """Restore a saved state into ``model`` and ``optimizer``: (next step, losses so far,
        RNG states for :func:`restore_rng`), or (0, [], None) with no file."""
        if not self.path.exists():
            return 0, [], None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            fingerprint = saved["fingerprint"]
        except Exception as err:
            raise WeightsError(f"{self.path}: not a readable fine-tune state ({err}); delete "
                               "it to start this fine-tune over") from err  # fmt: skip
        if fingerprint != self.fingerprint:
            raise ConfigError(
                f"{self.path}: saved by a different fine-tune (another init, recipe or labelled "
                "subset); delete it, or keep the state of this one in another folder"
            )
        model.load_state_dict(saved["model"])
        if saved["optimizer"] is not None:
            optimizer.load_state_dict(saved["optimizer"])
        rng = {key: saved[key] for key in ("rng", "cuda_rng") if key in saved}
        return int(saved["step"]), [float(v) for v in saved["losses"]], rng

    def save(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None,
        losses: list[float],
    ) -> None:  # fmt: skip
        """Write the state before ``step``; ``optimizer`` None once the run is finished."""
        state = {
            "fingerprint": self.fingerprint,
            "step": step,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_save(state, self.path)


def restore_rng(states: dict[str, Any]) -> None:
    """Set torch's RNG (and CUDA's, where saved and present) to a saved state's."""
    torch.set_rng_state(states["rng"])
    if "cuda_rng" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda_rng"])
