"""Correspondence accuracy against known crop geometry, and its chance level in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.data.views import View, ViewGeometry
from densessl.eval.correspondence import (
    chance_of_match,
    correspondence_accuracy,
    correspondence_quality,
)


def view(box, flipped=False, size=(64, 64)) -> View:
    geometry = ViewGeometry(crop_box=box, flipped=flipped, output_size=size, source_size=(100, 100))
    return View(pixels=torch.zeros(3, *size, dtype=torch.uint8), geometry=geometry,
                photometric=torch.zeros(12))  # fmt: skip


def test_identical_views_identity_match_is_all_correct():
    views = [view((10, 10, 74, 74)), view((10, 10, 74, 74))]
    identity = torch.arange(16)
    assert (correspondence_quality(views, identity, (4, 4)) == 1).all()
    far = (identity + 10) % 16  # mostly more than one cell away
    assert (correspondence_quality(views, far, (4, 4)) == 0).sum() >= 10


def test_flipped_key_view_needs_mirrored_match():
    views = [view((0, 0, 64, 64)), view((0, 0, 64, 64), flipped=True)]
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    mirrored = (rows * 4 + (3 - cols)).reshape(-1)
    assert (correspondence_quality(views, mirrored, (4, 4)) == 1).all()
    identity = torch.arange(16)
    outer_columns = (cols.reshape(-1) == 0) | (cols.reshape(-1) == 3)
    assert (correspondence_quality(views, identity, (4, 4))[outer_columns] == 0).all()


def test_points_outside_the_key_view_are_not_scored():
    views = [view((0, 0, 64, 64)), view((32, 0, 96, 64))]  # key view: right-shifted by half
    quality = correspondence_quality(views, torch.arange(16), (4, 4))
    left_half = torch.arange(16) % 4 < 2
    assert (quality[left_half] == -1).all() and (quality[~left_half] >= 0).all()


def test_chance_is_the_share_of_the_grid_within_one_cell():
    """4 x 4 grid, same view: corners see 4 of 16 cells, edges 6, the inner four 9."""
    views = [view((10, 10, 74, 74)), view((10, 10, 74, 74))]
    chance = chance_of_match(views, (4, 4))
    assert chance.shape == (16,)
    assert chance.mean().item() == pytest.approx((4 * 4 + 8 * 6 + 4 * 9) / 16 / 16)


class PooledPixels(torch.nn.Module):
    """A "backbone" whose C5 cell is the mean colour of its patch: 5 x 5 cells."""

    def forward(self, x):
        return {"c5": F.adaptive_avg_pool2d(x, (5, 5))}


def position_image(size: int = 200) -> Image.Image:
    """Red grows with x, green with y, blue constant: each point's colour names its place."""
    ys, xs = np.mgrid[0:size, 0:size]
    rgb = np.stack([xs * 255 // size, ys * 255 // size, np.full_like(xs, 255)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_features_that_encode_the_position_match_correctly():
    score = correspondence_accuracy(PooledPixels(), [position_image()] * 6, size=80)
    assert score.scored > 0
    assert score.accuracy >= 95
    assert 20 < score.chance < 50  # a 5 x 5 grid: up to 9 of 25 cells are within one cell


def test_features_blind_to_position_score_near_chance():
    flat = Image.new("RGB", (200, 200), (90, 120, 200))  # every cell alike: the first cell wins
    score = correspondence_accuracy(PooledPixels(), [flat] * 6, size=80)
    assert score.accuracy < score.chance + 25
