"""Local binary patterns with 8 neighbours at radius 1: the texture code of selective search.

scikit-image's ``local_binary_pattern(channel, P=8, R=1.0)`` (method "default"), as SoCo's
selective search uses it, in whole-array numpy: neighbour ``p`` at angle ``2 pi p / 8`` (row
offset ``-sin``, column ``cos``, rounded to 5 decimals), bilinearly interpolated with 0 outside;
bit ``p`` set when it is ``>=`` the centre. scikit-image's order of operations is kept, so codes
agree bit for bit on integer images (where flat patches must land on the ``>=`` side).
"""

from __future__ import annotations

import math

import numpy as np

NEIGHBOURS = 8
RADIUS = 1.0


def _offsets() -> list[tuple[float, float]]:
    angles = [2 * math.pi * p / NEIGHBOURS for p in range(NEIGHBOURS)]
    return [(round(-RADIUS * math.sin(a), 5), round(RADIUS * math.cos(a), 5)) for a in angles]


def _shifted(padded: np.ndarray, dr: int, dc: int, height: int, width: int) -> np.ndarray:
    """``image[r + dr, c + dc]`` for every pixel, 0 outside; ``padded`` has a 1-pixel 0 border."""
    return padded[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]


def local_binary_pattern(channel: np.ndarray) -> np.ndarray:
    """8-neighbour, radius-1 LBP code of every pixel: (H, W) real array -> (H, W) uint8."""
    image = np.asarray(channel, dtype=np.float64)
    height, width = image.shape
    padded = np.pad(image, 1)
    codes = np.zeros((height, width), dtype=np.uint8)
    for bit, (row_offset, col_offset) in enumerate(_offsets()):
        r0, c0 = math.floor(row_offset), math.floor(col_offset)
        r1, c1 = math.ceil(row_offset), math.ceil(col_offset)
        # The fractional parts as scikit-image forms them: (r + offset) - floor(r + offset). For
        # the rows and columns of a whole image this is the same number for every pixel except
        # through rounding of r + offset; the offsets here have 5 decimals and r < 2**20, so the
        # per-pixel values are computed exactly as below (checked against scikit-image).
        rows = np.arange(height, dtype=np.float64)[:, None] + row_offset
        cols = np.arange(width, dtype=np.float64)[None, :] + col_offset
        dr = rows - np.floor(rows)
        dc = cols - np.floor(cols)
        top = (1 - dc) * _shifted(padded, r0, c0, height, width) + dc * _shifted(
            padded, r0, c1, height, width
        )
        bottom = (1 - dc) * _shifted(padded, r1, c0, height, width) + dc * _shifted(
            padded, r1, c1, height, width
        )
        value = (1 - dr) * top + dr * bottom
        codes |= ((value - image) >= 0).astype(np.uint8) << bit
    return codes
