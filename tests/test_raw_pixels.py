"""The raw-pixel baseline: each cell is exactly the flattened pixels of its block."""

from __future__ import annotations

import torch

from densessl.eval.raw_pixels import PIXELS, RawPixels
from densessl.eval.weights import load_backbone


def test_each_cell_holds_its_block_of_pixels():
    x = torch.randn(2, 3, 32, 48)
    grid = RawPixels(patch=16)(x)[PIXELS]
    assert grid.shape == (2, 3 * 16 * 16, 2, 3)
    # Cell (row 1, column 2) of image 1 is the block x[1, :, 16:32, 32:48], channel-major.
    assert torch.equal(grid[1, :, 1, 2], x[1, :, 16:32, 32:48].reshape(-1))


def test_load_backbone_names_the_baseline():
    baseline = load_backbone("pixels")
    assert isinstance(baseline, RawPixels)
    assert dict(baseline.level_strides) == {PIXELS: 16} and list(baseline.parameters()) == []
