"""MCL montages: every cell must be its recorded source image, down-sampled."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densessl.data.montage import make_montage, mcl_level


def images(batch: int, height: int = 16, width: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_cells(
    batch: torch.Tensor, montages: torch.Tensor, sources: torch.Tensor, antialias: bool
) -> None:
    """Plain loop over montages and cells against per-image ``F.interpolate``."""
    grid = sources.shape[1]
    h, w = batch.shape[2] // grid, batch.shape[3] // grid
    mode = "bilinear" if antialias else "nearest"
    for m in range(montages.shape[0]):
        for r in range(grid):
            for c in range(grid):
                source = batch[int(sources[m, r, c])][None]
                expected = F.interpolate(
                    source, scale_factor=1 / grid, mode=mode, antialias=antialias
                )[0]
                cell = montages[m, :, r * h : (r + 1) * h, c * w : (c + 1) * w]
                torch.testing.assert_close(cell, expected)


@pytest.mark.parametrize("grid", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [3, 5, 16, 20])
def test_cells_are_nearest_downsampled_sources(grid, batch):
    x = images(batch)
    montages, sources = make_montage(x, grid, seeded())
    reference_cells(x, montages, sources, antialias=False)


def test_nearest_keeps_top_left_pixel_of_each_block():
    # Pixel value = its flat index, so the kept pixels name themselves.
    x = torch.arange(8 * 8, dtype=torch.float32).view(1, 1, 8, 8)
    montages, _ = make_montage(x, 4, seeded())
    assert montages[0, 0, :2, :2].tolist() == [[0.0, 4.0], [32.0, 36.0]]


@pytest.mark.parametrize(("batch", "grid"), [(5, 2), (20, 4), (3, 4), (1, 8), (70, 8)])
def test_every_image_appears_and_the_fill_rule(batch, grid):
    montages, sources = make_montage(images(batch, 16, 16), grid, seeded())
    cells = grid * grid
    assert montages.shape[0] == -(-batch // cells)
    n = sources.numel()
    counts = torch.bincount(sources.flatten(), minlength=batch)
    assert counts.shape == (batch,) and counts.min() >= 1
    # perm mod B: the images with index < n mod B get one extra cell.
    expected = torch.full((batch,), n // batch)
    expected[: n % batch] += 1
    assert torch.equal(counts, expected)


def test_explicit_num_montages_repeats_images():
    _, sources = make_montage(images(8, 16, 16), 2, seeded(), num_montages=6)
    assert sources.shape == (6, 2, 2)
    assert torch.equal(torch.bincount(sources.flatten()), torch.full((8,), 3))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float64])
def test_shapes_and_dtypes(dtype):
    x = (images(6, 16, 24) * 255).to(dtype)
    montages, sources = make_montage(x, 4, seeded())
    assert montages.shape == (1, 3, 16, 24) and montages.dtype == dtype
    assert sources.shape == (1, 4, 4) and sources.dtype == torch.long
    assert montages.device == sources.device == x.device


def test_seeded_generator_is_deterministic():
    x = images(10)
    first = make_montage(x, 2, seeded(7))
    again = make_montage(x, 2, seeded(7))
    other = make_montage(x, 2, seeded(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_antialias_matches_interpolate_and_differs_from_nearest():
    x = images(5)
    nearest, sources_n = make_montage(x, 4, seeded())
    smooth, sources_a = make_montage(x, 4, seeded(), antialias=True)
    assert torch.equal(sources_n, sources_a)
    assert not torch.allclose(nearest, smooth)
    reference_cells(x, smooth, sources_a, antialias=True)


@pytest.mark.parametrize(("height", "width"), [(18, 16), (16, 18)])
def test_size_not_divisible_by_grid_is_an_error(height, width):
    with pytest.raises(ValueError, match="not divisible by grid 4"):
        make_montage(images(2, height, width), 4)


def test_too_few_montages_is_an_error():
    with pytest.raises(ValueError, match="cannot hold"):
        make_montage(images(5, 16, 16), 2, num_montages=1)


def test_mcl_levels_match_the_reference_counts():
    x = images(128, 8, 8)
    full, sources = mcl_level(x, 0)
    assert full is x and torch.equal(sources.flatten(), torch.arange(128))
    for level, montages, repeats in [(1, 32, 1), (2, 8, 1), (3, 4, 2)]:
        out, sources = mcl_level(x, level, seeded(level))
        assert out.shape == (montages, 3, 8, 8)
        assert torch.equal(torch.bincount(sources.flatten()), torch.full((128,), repeats))
    with pytest.raises(ValueError, match=r"levels are 0\.\.3"):
        mcl_level(x, 4)
