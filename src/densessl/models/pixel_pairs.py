"""PixPro's positive pixel pairs: two feature-map pixels of two views of one image are a pair
when their bin centres, mapped back into the source image, lie closer than T bin diagonals.

Xie et al., "Propagate Yourself", CVPR 2021, https://arxiv.org/abs/2011.10043, Sec. 3.1;
reference zdaxie/PixPro (``regression_loss`` in ``contrast/models/PixPro.py`` and the crop
coordinates of ``contrast/data/transform_coord.py``).
"""

from __future__ import annotations

import torch


def crop_coordinates(
    crop_boxes: torch.Tensor, flipped: torch.Tensor, source_sizes: torch.Tensor
) -> torch.Tensor:
    """Each view's crop as PixPro's (x_ul, y_ul, x_lr, y_lr) in [0, 1] of the source image.

    A crop of whole pixels [x0, x1) × [y0, y1) of a W × H image spans the pixel indices x0 ..
    x1 − 1, so x_ul = x0/(W − 1) and x_lr = (x1 − 1)/(W − 1), and likewise y over H − 1 (x and y
    are normalised separately, as the reference does). A view mirrored after cropping swaps x_ul
    and x_lr: its first column comes from the crop's right edge.

    Args:
        crop_boxes: (B, 4) (x0, y0, x1, y1) in source pixels (:class:`densessl.data.batch.Batch`).
        flipped: (B,) bool.
        source_sizes: (B, 2) (height, width) of the source images.

    Returns:
        (B, 4) float32.
    """
    boxes = crop_boxes.float()
    height, width = (source_sizes.float() - 1).clamp(min=1).unbind(-1)
    left, top = boxes[:, 0] / width, boxes[:, 1] / height
    right, bottom = (boxes[:, 2] - 1) / width, (boxes[:, 3] - 1) / height
    left, right = torch.where(flipped, right, left), torch.where(flipped, left, right)
    return torch.stack([left, top, right, bottom], dim=-1)


def _bin_centres(coords: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """(B, 4) crop coordinates -> the (B, H·W, 2) source positions of the centres of an H × W
    grid over the view (row-major, as ``flatten``), and each grid's bin diagonal (B,)."""
    start_x, start_y, end_x, end_y = coords.unbind(-1)
    bin_w, bin_h = (end_x - start_x) / width, (end_y - start_y) / height  # negative when flipped
    cols = torch.arange(width, dtype=coords.dtype, device=coords.device) + 0.5
    rows = torch.arange(height, dtype=coords.dtype, device=coords.device) + 0.5
    x = start_x[:, None, None] + cols[None, None, :] * bin_w[:, None, None]  # (B, 1, W)
    y = start_y[:, None, None] + rows[None, :, None] * bin_h[:, None, None]  # (B, H, 1)
    centres = torch.stack(torch.broadcast_tensors(x, y), dim=-1).flatten(1, 2)
    return centres, torch.hypot(bin_w, bin_h)


def positive_pairs(
    coords_q: torch.Tensor,
    coords_k: torch.Tensor,
    grid_q: tuple[int, int],
    grid_k: tuple[int, int],
    threshold: float,
) -> torch.Tensor:
    """m[b, i, j] = 1 where ‖c_i − c'_j‖ / max(d, d') < T, else 0.

    c_i is the source position of pixel i's bin centre in view q's (H, W) grid, c'_j that of
    pixel j in view k's, d and d' the two grids' bin diagonals (per image), all in the
    normalised coordinates of :func:`crop_coordinates`; T = 0.7 in the paper.

    Returns:
        (B, Nq, Nk) float mask, Nq = H_q·W_q and Nk = H_k·W_k; no gradient.
    """
    centres_q, diag_q = _bin_centres(coords_q.float(), *grid_q)
    centres_k, diag_k = _bin_centres(coords_k.float(), *grid_k)
    distance = torch.cdist(centres_q, centres_k) / torch.maximum(diag_q, diag_k)[:, None, None]
    return (distance < threshold).float()
