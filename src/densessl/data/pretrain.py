"""The pretraining dataset: (epoch, index) -> the views of one image, whose randomness is a pure
function of ``(seed, epoch, index)`` (independent of workers, processes and resumes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from densessl.data.reduced_decode import open_deferred
from densessl.data.sources import ImageSource, UnreadableImage
from densessl.data.views import ViewsWithExtras
from densessl.errors import DataError, UnreadableImageWarning


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample, well mixed from the run seed, the epoch and the index."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


class MultiViewDataset:
    """Map-style dataset keyed by ``(epoch, index)`` that returns the views of one image.

    An unreadable file is skipped (one warning per file) for the next readable index; the sample
    keeps its ``index`` and seed and lists the skipped paths under ``"skipped"``.

    Args:
        transform: ``transform(image, generator)`` -> views or :class:`ViewsWithExtras`;
            ``transform(image, generator, boxes)`` with ``proposals``.
        proposals: ``proposals(i)`` -> (M, 4) xyxy source-pixel boxes of image ``i`` (SoCo).
    """

    def __init__(
        self,
        source: ImageSource,
        transform: Callable[..., Any],
        seed: int,
        proposals: Callable[[int], Any] | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.proposals = proposals
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _warn_once(self, error: UnreadableImage) -> None:
        if error.path not in self._warned:
            self._warned.add(error.path)
            warnings.warn(
                f"skipping unreadable image {error.path}: {error.reason}", UnreadableImageWarning, 3
            )

    def _views(self, position: int, generator: torch.Generator) -> Any:
        """The transform's output for the image at ``position`` (JPEGs decoded at the size the
        crops allow, when the transform can)."""
        deferred = None
        if self.proposals is None and hasattr(self.transform, "from_deferred"):
            deferred = open_deferred(self.source, position)
        if deferred is not None:
            return self.transform.from_deferred(deferred, generator)
        image = self.source.load_image(position)
        if self.proposals is None:
            return self.transform(image, generator)
        # the boxes of the image actually read, not of a skipped one
        return self.transform(image, generator, self.proposals(position))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        seed = sample_seed(self.seed, epoch, index)
        skipped: list[str] = []
        size = len(self.source)
        for offset in range(size):
            position = (index + offset) % size
            # A fresh generator per try: a file that fails after its crops were drawn leaves
            # the next one the draws it would have had.
            generator = torch.Generator().manual_seed(seed)
            try:
                result = self._views(position, generator)
            except UnreadableImage as error:
                self._warn_once(error)
                skipped.append(error.path)
                continue
            views, extras = result, {}
            if isinstance(result, ViewsWithExtras):
                views, extras = result.views, result.extras
            return {"views": views, "extras": extras, "index": index, "skipped": skipped}
        raise DataError(
            f"none of the {size} images could be read (first: {self.source.describe(0)}); "
            "check that the files are valid images"
        )
