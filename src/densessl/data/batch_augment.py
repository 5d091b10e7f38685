"""The batched augmentation steps of a collated batch, in the workers or on the device: each
view's photometric parameters, then ``extras["cutout"]`` rectangles (SoCo's box-aware cutout).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from densessl.data.augment import apply_photometric
from densessl.data.batch import Batch


def augment_batch(batch: Batch) -> Batch:
    """The batch with every view augmented (a no-op on an already augmented batch)."""
    if batch.augmented:
        return batch
    views = [apply_photometric(v, batch.photometric[:, i]) for i, v in enumerate(batch.views)]
    if "cutout" in batch.extras:
        cutout = batch.extras["cutout"]  # (B, V, K, 4)
        views = [apply_box_cutout(v, cutout[:, i]) for i, v in enumerate(views)]
    return replace(batch, views=views, augmented=True)


def apply_box_cutout(images: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
    """Zero every pixel whose centre lies in one of its image's rectangles; a new tensor.

    Args:
        images: (B, C, H, W) normalised views (zero = the mean colour, as the reference).
        rects: (B, K, 4) xyxy view-pixel rectangles; all-zero rows cut nothing.
    """
    height, width = images.shape[-2:]
    xs = torch.arange(width, device=images.device, dtype=rects.dtype) + 0.5
    ys = torch.arange(height, device=images.device, dtype=rects.dtype) + 0.5
    r = rects[:, :, :, None]  # (B, K, 4, 1)
    inside_x = (xs >= r[:, :, 0]) & (xs < r[:, :, 2])  # (B, K, W)
    inside_y = (ys >= r[:, :, 1]) & (ys < r[:, :, 3])  # (B, K, H)
    cut = (inside_y[:, :, :, None] & inside_x[:, :, None, :]).any(dim=1)  # (B, H, W)
    return images.masked_fill(cut[:, None], 0.0)
