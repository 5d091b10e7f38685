"""What a training step receives: V views of B images, with the geometry of every view.

Letters: B images in the (per-process) batch, V views per image, P photometric parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass
class Batch:
    """A batch of multi-view samples.

    Attributes:
        views: V tensors (B, 3, H_v, W_v): uint8 until :attr:`augmented`, then float32.
        crop_boxes: (B, V, 4) float32, each view's crop box (x0, y0, x1, y1) in source pixels.
        flipped: (B, V) bool, whether the view was mirrored left-right after cropping.
        source_sizes: (B, 2) long, (height, width) of each source image.
        photometric: (B, V, P) float32 photometric parameters (:mod:`densessl.data.augment`).
        index: (B,) long, dataset index of each sample.
        extras: per-sample tensors stacked on the batch dimension (SoCo: ``"boxes"`` (B, P, 2,
            K, 4), ``"box_ids"`` (B, P, 2, K), ``"cutout"`` (B, V, K, 4)).
        skipped: files the data workers could not read while building this batch.
    """

    views: list[torch.Tensor]
    crop_boxes: torch.Tensor
    flipped: torch.Tensor
    source_sizes: torch.Tensor
    photometric: torch.Tensor
    index: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    augmented: bool = False

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self,
            views=[move(v) for v in self.views],
            crop_boxes=move(self.crop_boxes),
            flipped=move(self.flipped),
            source_sizes=move(self.source_sizes),
            photometric=move(self.photometric),
            index=move(self.index),
            extras={name: move(t) for name, t in self.extras.items()},
        )

    def pin_memory(self) -> Batch:
        """Every tensor in page-locked memory, for asynchronous copies to a GPU."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return replace(
            self,
            views=[pin(v) for v in self.views],
            crop_boxes=pin(self.crop_boxes),
            flipped=pin(self.flipped),
            source_sizes=pin(self.source_sizes),
            photometric=pin(self.photometric),
            index=pin(self.index),
            extras={name: pin(t) for name, t in self.extras.items()},
        )


def collate_views(samples: list[dict[str, Any]]) -> Batch:
    """Stack samples produced by :class:`densessl.data.pretrain.MultiViewDataset`."""
    num_views = len(samples[0]["views"])
    views = [torch.stack([s["views"][v].pixels for s in samples]) for v in range(num_views)]
    geometry = [[s["views"][v].geometry for v in range(num_views)] for s in samples]
    crop_boxes = torch.tensor([[list(g.crop_box) for g in row] for row in geometry])
    flipped = torch.tensor([[g.flipped for g in row] for row in geometry])
    source_sizes = torch.tensor([list(row[0].source_size) for row in geometry])
    photometric = torch.stack([torch.stack([v.photometric for v in s["views"]]) for s in samples])
    index = torch.tensor([s["index"] for s in samples])
    skipped = [path for s in samples for path in s["skipped"]]
    extras = {
        name: torch.stack([s["extras"][name] for s in samples])
        for name in samples[0].get("extras", {})
    }
    return Batch(
        views=views,
        crop_boxes=crop_boxes.float(),
        flipped=flipped,
        source_sizes=source_sizes.long(),
        photometric=photometric.float(),
        index=index.long(),
        extras=extras,
        skipped=skipped,
    )
