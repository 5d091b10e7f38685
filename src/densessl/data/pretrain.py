"""The pretraining dataset: (epoch, index) -> the views of one image.

A sample's randomness is a pure function of ``(seed, epoch, index)``, so the same sample gets
the same views whatever the number of data workers or training processes, and after a resume.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from densessl.data.sources import DataError, ImageSource, UnreadableImage
from densessl.data.views import MultiViewTransform


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample, well mixed from the run seed, the epoch and the index."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


class MultiViewDataset:
    """Map-style dataset keyed by ``(epoch, index)`` that returns the views of one image.

    An unreadable file is skipped with one warning per file (per process) and replaced by the
    next readable index ``(index + k) % len``; the sample keeps its requested ``index`` and seed,
    and lists the skipped paths under ``"skipped"``.

    Args:
        source: where images come from.
        transform: makes the views.
        seed: run seed.
    """

    def __init__(self, source: ImageSource, transform: MultiViewTransform, seed: int) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _warn_once(self, error: UnreadableImage) -> None:
        if error.path not in self._warned:
            self._warned.add(error.path)
            warnings.warn(
                f"skipping unreadable image {error.path}: {error.reason}", RuntimeWarning, 3
            )

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        skipped: list[str] = []
        size = len(self.source)
        for offset in range(size):
            try:
                image = self.source.load_image((index + offset) % size)
            except UnreadableImage as error:
                self._warn_once(error)
                skipped.append(error.path)
                continue
            views = self.transform(image, generator)
            return {"views": views, "index": index, "skipped": skipped}
        raise DataError(
            f"none of the {size} images could be read (first: {self.source.describe(0)}); "
            "check that the files are valid images"
        )
