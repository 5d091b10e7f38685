"""Views must be exactly where their recorded geometry says they are."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from densessl.config import build_config
from densessl.data.augment import NUM_PHOTOMETRIC_PARAMS, P_BLUR_SIGMA
from densessl.data.batch import collate_views
from densessl.data.views import (
    MultiViewTransform,
    ViewGeometry,
    ViewSpec,
    moco_v2_views,
    sample_crop,
)
from densessl.errors import ConfigError
from densessl.methods import get_method
from densessl.methods.base import MethodContext

SOURCE_H, SOURCE_W = 160, 200


def coordinate_image() -> Image.Image:
    """Pixel (x, y) has R = x, G = y: the image tells where each of its pixels is."""
    y, x = np.mgrid[0:SOURCE_H, 0:SOURCE_W]
    pixels = np.stack([x, y, np.full_like(x, 77)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def pixel_centres(height: int, width: int) -> torch.Tensor:
    """(h, w, 2) continuous (x, y) centres of the pixels of an h x w image."""
    v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([u, v], dim=-1).double() + 0.5


SPECS = [
    ViewSpec(48, flip_p=0.0),  # shrinking, never flipped
    ViewSpec((40, 56), flip_p=1.0),  # non-square, always flipped
    ViewSpec(96, scale=(0.05, 0.2), flip_p=0.5),  # enlarging
]


@pytest.mark.parametrize("seed", range(8))
def test_view_pixels_match_the_source_at_view_to_source(seed):
    views = MultiViewTransform(SPECS)(coordinate_image(), torch.Generator().manual_seed(seed))
    assert [v.geometry.flipped for v in views[:2]] == [False, True]
    for view in views:
        geometry = view.geometry
        height, width = geometry.output_size
        assert view.pixels.shape == (3, height, width) and view.pixels.dtype == torch.uint8
        source = geometry.view_to_source(pixel_centres(height, width))
        # Source pixel i holds value i at its centre i + 0.5: linear in the continuous coordinate.
        expected = source - 0.5
        # Away from the image border (where the resampling filter is cut) interpolation of a
        # linear ramp is exact up to uint8 rounding (a half-pixel slip would show as ~1.0).
        support = max((geometry.crop_box[2] - geometry.crop_box[0]) / width, 1.0) + 1
        interior = (
            (source[..., 0] > support)
            & (source[..., 0] < SOURCE_W - support)
            & (source[..., 1] > support)
            & (source[..., 1] < SOURCE_H - support)
        )
        assert interior.float().mean() > 0.5
        got = view.pixels[:2].permute(1, 2, 0).double()
        error = (got - expected).abs()[interior]
        assert error.max() <= 0.51, (geometry, error.max())


def random_geometry(flipped: bool) -> ViewGeometry:
    return ViewGeometry((12.0, 30.0, 92.0, 90.0), flipped, (32, 48), (100, 120))


@pytest.mark.parametrize("flipped", [False, True])
def test_view_to_source_closed_form_and_inverse(flipped):
    geometry = random_geometry(flipped)
    # View corners map onto crop corners; a flip swaps left and right.
    corners = torch.tensor([[0.0, 0.0], [48.0, 32.0]])
    expected = torch.tensor(
        [[92.0, 30.0], [12.0, 90.0]] if flipped else [[12.0, 30.0], [92.0, 90.0]]
    )
    torch.testing.assert_close(geometry.view_to_source(corners), expected)
    points = torch.rand(5, 7, 2, dtype=torch.float64) * 60
    torch.testing.assert_close(geometry.source_to_view(geometry.view_to_source(points)), points)
    torch.testing.assert_close(geometry.view_to_source(geometry.source_to_view(points)), points)


@pytest.mark.parametrize("flipped", [False, True])
def test_box_round_trip_and_crop_box_fills_the_view(flipped):
    geometry = random_geometry(flipped)
    crop = torch.tensor([geometry.crop_box])
    torch.testing.assert_close(geometry.box_to_view(crop), torch.tensor([[0.0, 0.0, 48.0, 32.0]]))
    # The left quarter of the crop lands in the right quarter of a flipped view.
    left_quarter = torch.tensor([[12.0, 30.0, 32.0, 90.0]])
    expected = [[36.0, 0.0, 48.0, 32.0]] if flipped else [[0.0, 0.0, 12.0, 32.0]]
    torch.testing.assert_close(geometry.box_to_view(left_quarter), torch.tensor(expected))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 35.0, 70.0, 80.0]])
    view_boxes = geometry.box_to_view(boxes)
    assert (view_boxes[:, 2:] > view_boxes[:, :2]).all()
    torch.testing.assert_close(geometry.box_to_source(view_boxes), boxes)


def test_crop_sampling_matches_torchvision_get_params():
    image = torch.zeros(3, SOURCE_H, SOURCE_W)
    for seed in range(100):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3])
        got = sample_crop(
            SOURCE_H, SOURCE_W, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(seed)
        )
        assert got == tuple(expected)


def test_crop_fallback_is_central_with_clamped_ratio():
    # A 10 x 400 strip: no crop of ratio <= 4/3 and area >= 90% fits, so the fallback is used.
    top, left, h, w = sample_crop(10, 400, (0.9, 1.0), (3 / 4, 4 / 3), torch.Generator())
    assert (top, h, w) == (0, 10, 13) and left == (400 - 13) // 2


def test_crop_statistics_follow_the_spec():
    transform = MultiViewTransform([ViewSpec(16)])
    generator = torch.Generator().manual_seed(0)
    image = coordinate_image()
    fractions, log_ratios, flips = [], [], []
    for _ in range(400):
        geometry = transform(image, generator)[0].geometry
        x0, y0, x1, y1 = geometry.crop_box
        assert 0 <= x0 < x1 <= SOURCE_W and 0 <= y0 < y1 <= SOURCE_H
        assert all(float(c).is_integer() for c in geometry.crop_box)
        assert geometry.source_size == (SOURCE_H, SOURCE_W)
        fractions.append((x1 - x0) * (y1 - y0) / (SOURCE_H * SOURCE_W))
        log_ratios.append(math.log((x1 - x0) / (y1 - y0)))
        flips.append(geometry.flipped)
    fractions, log_ratios = np.array(fractions), np.array(log_ratios)
    # Rounding to whole pixels moves fractions and ratios slightly past the bounds.
    assert np.mean((fractions > 0.19) & (fractions <= 1.0)) > 0.98
    assert np.mean(np.abs(log_ratios) <= math.log(4 / 3) + 0.02) > 0.98
    # Large crops of extreme ratio do not fit and are redrawn, so the mean falls below 0.6.
    assert fractions.min() < 0.25 and fractions.max() > 0.9 and 0.45 < fractions.mean() < 0.6
    assert abs(np.mean(flips) - 0.5) < 0.08


def test_same_seed_same_views_and_other_seed_other_views():
    transform = MultiViewTransform(moco_v2_views(32))
    image = coordinate_image()
    first = transform(image, torch.Generator().manual_seed(5))
    second = transform(image, torch.Generator().manual_seed(5))
    other = transform(image, torch.Generator().manual_seed(6))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.pixels, b.pixels)
        assert a.geometry == b.geometry
        assert torch.equal(a.photometric, b.photometric)
    assert first[0].geometry != other[0].geometry
    # Two views of one call are drawn independently.
    assert first[0].geometry != first[1].geometry


def test_views_collate_into_a_batch():
    transform = MultiViewTransform(moco_v2_views(24))
    generator = torch.Generator().manual_seed(0)
    samples = [
        {"views": transform(coordinate_image(), generator), "index": i, "skipped": []}
        for i in range(3)
    ]
    batch = collate_views(samples)
    assert [tuple(v.shape) for v in batch.views] == [(3, 3, 24, 24)] * 2
    assert batch.crop_boxes.shape == (3, 2, 4)
    assert batch.photometric.shape == (3, 2, NUM_PHOTOMETRIC_PARAMS)
    assert batch.source_sizes.tolist() == [[SOURCE_H, SOURCE_W]] * 3


@pytest.mark.parametrize("method", ["mocov2", "densecl"])
def test_moco_blur_sigma_setting_reaches_the_drawn_views(method):
    """method.blur_sigma (a recipe at small views scales the paper's 0.1-2 px down) sets the
    range every blurred view's σ is drawn from; the paper's range stays the default."""
    cls = get_method(method)
    ctx = MethodContext(backbone="resnet18", image_size=32)
    paper = cls(build_config(cls).method, ctx)
    scaled = cls(build_config(cls, overrides=["method.blur_sigma=[0.25,0.5]"]).method, ctx)
    for model, (low, high) in ((paper, (0.1, 2.0)), (scaled, (0.25, 0.5))):
        transform = MultiViewTransform(model.view_specs())
        generator = torch.Generator().manual_seed(0)
        drawn = torch.stack([v.photometric for _ in range(300)
                             for v in transform(coordinate_image(), generator)])  # fmt: skip
        sigma = drawn[:, P_BLUR_SIGMA][drawn[:, P_BLUR_SIGMA] > 0]
        assert abs(len(sigma) / len(drawn) - 0.5) < 0.06  # MoCo-v2's blur p 0.5
        assert sigma.min() >= low and sigma.max() <= high
        assert sigma.min() < low + 0.1 * (high - low) and sigma.max() > high - 0.1 * (high - low)


@pytest.mark.parametrize("bad", ["[0.0,2.0]", "[2.0,0.1]", "[-1.0,0.5]"])
def test_moco_blur_sigma_out_of_range_is_a_config_error(bad):
    cls = get_method("mocov2")
    cfg = build_config(cls, overrides=[f"method.blur_sigma={bad}"])
    with pytest.raises(ConfigError, match=r"method\.blur_sigma"):
        cls(cfg.method, MethodContext(backbone="resnet18", image_size=32))
