"""Options of the detection fine-tune (``densessl eval detect``), one dataclass, built through
:func:`densessl.config.build_options`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEADS = ("auto", "v1", "v2")


@dataclass
class DetectOptions:
    """How to fine-tune and score a detector (see :func:`~densessl.eval.detection.finetune`).

    Attributes:
        model: "faster_rcnn" or "mask_rcnn" (also reports mask AP).
        arch: ResNet name; None = the backbone's (resnet18 without a backbone).
        iterations: training iterations; None = 12 epochs of the train images with boxes.
        batch_size: images per iteration over all processes (divisible by their number).
        lr: base learning rate; None = ``0.02 * batch_size / 16``.
        norm: "sync" (the SSL protocol's SyncBN), "frozen" or "bn" trunk norms.
        heads: "v1", "v2", or "auto" = v2 exactly when pretrained v2 heads are given.
        min_size, max_size: as :func:`~densessl.eval.detection.model.build_detector`.
        labels: share (``"10%"``) or count (``"37"``) of the train images, drawn by ``seed``.
    """

    model: str = "faster_rcnn"
    arch: str | None = None
    iterations: int | None = None
    batch_size: int = 2
    lr: float | None = None
    norm: str = "sync"
    heads: str = "auto"
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    labels: str = "100%"
    detector_options: dict[str, Any] = field(default_factory=dict)

    def check(self, world: int) -> None:
        """Raise ValueError for an unknown head layout or a batch ``world`` ranks cannot split
        (unknown models and norms are refused by ``build_detector``)."""
        if self.heads not in HEADS:
            raise ValueError(f"unknown head layout {self.heads!r}; known: {', '.join(HEADS)}")
        if self.batch_size < 1 or self.batch_size % world:
            raise ValueError(
                f"batch_size {self.batch_size} must be a positive multiple of {world} ranks"
            )
