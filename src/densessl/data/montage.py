"""Image montages for MCL: down-scaled images tiled into full-size grids.

Level ``i`` shrinks every view by ``2**i`` and tiles the batch into ``2**i x 2**i`` montages of
the original size, so each cell lines up with one 7x7 window of P(5 - i), labelled by its source
image. As GuoQiushan/MCL ``random_combine_img``: nearest down-sampling, cells from a random
permutation modulo the batch size, montages from one process's batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The reference config tiles B images into B/4, B/16 and B/32 montages at levels 1-3: each image
# fills one cell at levels 1 and 2 and two cells at level 3 (a montage count of B/64 would give
# too few montages, at 8x8 cells each, for a per-GPU batch of 128).
MCL_CELL_REPEATS = {1: 1, 2: 1, 3: 2}


def make_montage(
    images: torch.Tensor,
    grid: int,
    generator: torch.Generator | None = None,
    *,
    num_montages: int | None = None,
    antialias: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile down-scaled ``images`` into ``grid x grid`` montages of the original size.

    The ``n = M * grid**2`` cells, row-major over (m, r, c), receive ``perm[k] mod B`` for a
    random permutation of ``0..n-1``: every image appears ``n // B`` or ``n // B + 1`` times.
    Nearest keeps pixel ``(grid*y, grid*x)`` for output ``(y, x)``, as
    ``F.interpolate(scale_factor=1/grid)``.

    Args:
        images: (B, C, H, W), H and W divisible by ``grid``.
        num_montages: M; default ``ceil(B / grid**2)``. Must satisfy ``M * grid**2 >= B``.
        antialias: anti-aliased bilinear instead of nearest (floating-point images only).

    Returns:
        montages: (M, C, H, W), same dtype and device as ``images``.
        sources: (M, grid, grid) long; cell ``montages[m, :, r*h:(r+1)*h, c*w:(c+1)*w]``
        (h = H // grid, w = W // grid) is image ``sources[m, r, c]`` down-sampled.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid}")
    batch, channels, height, width = images.shape
    if height % grid or width % grid:
        raise ValueError(
            f"image size {height}x{width} is not divisible by grid {grid}; "
            f"crop or resize the views to a multiple of {grid}"
        )
    cells = grid * grid
    if num_montages is None:
        num_montages = -(-batch // cells)
    if num_montages * cells < batch:
        raise ValueError(
            f"{num_montages} montages of {grid}x{grid} cells cannot hold all {batch} images"
        )

    h, w = height // grid, width // grid
    if antialias:
        small = F.interpolate(
            images, size=(h, w), mode="bilinear", align_corners=False, antialias=True
        )
    else:
        small = images[:, :, ::grid, ::grid]

    n = num_montages * cells
    perm_device = generator.device if generator is not None else images.device
    perm = torch.randperm(n, generator=generator, device=perm_device).to(images.device)
    sources = (perm % batch).view(num_montages, grid, grid)

    # (M, grid, grid, C, h, w) -> (M, C, grid, h, grid, w): rows of cells, then rows of pixels.
    tiles = small[sources.flatten()].view(num_montages, grid, grid, channels, h, w)
    montages = tiles.permute(0, 3, 1, 4, 2, 5).reshape(num_montages, channels, height, width)
    return montages, sources


def mcl_level(
    images: torch.Tensor,
    level: int,
    generator: torch.Generator | None = None,
    *,
    antialias: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of MCL level ``level`` (0..3) built from one view of the batch: level 0 the
    views with sources arange(B) as (B, 1, 1); level i :func:`make_montage` with grid ``2**i``
    and ``ceil(repeats * B / 4**i)`` montages (:data:`MCL_CELL_REPEATS`). (B, C, H, W) images ->
    montages (M, C, H, W) and sources (M, 2**level, 2**level) long."""
    if level == 0:
        sources = torch.arange(images.shape[0], device=images.device).view(-1, 1, 1)
        return images, sources
    if level not in MCL_CELL_REPEATS:
        raise ValueError(f"MCL levels are 0..3, got {level}")
    grid = 2**level
    num_montages = -(-MCL_CELL_REPEATS[level] * images.shape[0] // (grid * grid))
    return make_montage(images, grid, generator, num_montages=num_montages, antialias=antialias)
