"""Reduced-size JPEG decoding (DCT scaling): the views keep their crop boxes in source pixels.

The scale each image was decoded at is read back from the decoded image's size (``ceil(W / s)``
by ``ceil(H / s)``), not taken from the code under test; every box the reduced image was cut
with, mapped back by that scale, must lie within half a source pixel of the full decode's box.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from densessl.data import views as views_module
from densessl.data.pretrain import MultiViewDataset
from densessl.data.reduced_decode import DeferredJpeg, decode_scale, open_deferred
from densessl.data.sources import ImageFolder
from densessl.data.views import MultiViewTransform, ViewSpec


def smooth_jpeg(path, width: int, height: int, seed: int = 0) -> None:
    """A JPEG (quality 90) of smooth random colour blobs: low-pass content, so a reduced
    decode differs from a full one only by filtering, and a misplaced crop shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.save(path, quality=90)


def test_decode_scale_is_the_largest_that_keeps_every_crop_down_sampled():
    assert decode_scale([(448, 600)], [(224, 224)]) == 2
    assert decode_scale([(447, 900)], [(224, 224)]) == 1  # 447 / 2 < 224
    assert decode_scale([(1800, 1900)], [(224, 224)]) == 8  # capped at the DCT's 1/8
    assert decode_scale([(900, 900), (300, 300)], [(96, 96), (96, 96)]) == 2  # the smaller wins
    assert decode_scale([(100, 100)], [(224, 224)]) == 1  # up-sampled anyway: full decode


def inferred_scale(source_size, reduced_size) -> int:
    """The DCT scale s with reduced = ceil(source / s) in both sides (width, height)."""
    (w, h), (rw, rh) = source_size, reduced_size
    found = [s for s in (1, 2, 4, 8) if (math.ceil(w / s), math.ceil(h / s)) == (rw, rh)]
    assert len(found) == 1, (source_size, reduced_size)
    return found[0]


def test_reduced_decode_keeps_every_crop_box_within_half_a_source_pixel(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    smooth_jpeg(path, 1000, 750)
    transform = MultiViewTransform([ViewSpec(96, scale=(0.2, 1.0)), ViewSpec(160, (0.2, 1.0))])
    cuts = []  # (size of the image cut from, box) of every crop_resize call
    real_crop_resize = views_module.crop_resize

    def spy(image, box, size):
        cuts.append((image.size, box))
        return real_crop_resize(image, box, size)

    monkeypatch.setattr(views_module, "crop_resize", spy)
    full_image = Image.open(path).convert("RGB")
    scales = []
    for seed in range(24):
        full = transform(full_image, torch.Generator().manual_seed(seed))
        cuts.clear()
        reduced = transform.from_deferred(
            DeferredJpeg.open(path), torch.Generator().manual_seed(seed)
        )
        for view_full, view_reduced, (size, box) in zip(full, reduced, cuts, strict=True):
            scale = inferred_scale(full_image.size, size)
            scales.append(scale)
            in_source = [c * scale for c in box]
            assert np.abs(np.subtract(in_source, view_full.geometry.crop_box)).max() <= 0.5
            assert view_reduced.geometry == view_full.geometry
            assert torch.equal(view_reduced.photometric, view_full.photometric)
            # Same region, filtered differently: a few grey levels apart on this smooth image.
            diff = (view_reduced.pixels.float() - view_full.pixels.float()).abs().mean()
            assert diff < 4.0, (seed, scale, float(diff))
    assert {2, 4} <= set(scales)  # the reduced paths were really taken


def test_folder_offers_jpegs_deferred_and_other_files_decoded(tmp_path):
    smooth_jpeg(tmp_path / "a.jpg", 300, 200)
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "b.png")
    rotated = Image.new("RGB", (300, 200), (90, 20, 30))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90: crops are drawn in the upright frame, so decode fully
    rotated.save(tmp_path / "c.jpg", exif=exif)
    folder = ImageFolder(tmp_path, reduced_decode=True)
    assert isinstance(open_deferred(folder, 0), DeferredJpeg)
    assert open_deferred(folder, 1) is None and open_deferred(folder, 2) is None
    assert open_deferred(ImageFolder(tmp_path), 0) is None  # off unless asked for


def test_a_truncated_jpeg_is_skipped_and_the_next_image_gets_the_full_decode_draws(tmp_path):
    smooth_jpeg(tmp_path / "a.jpg", 640, 480, seed=1)
    smooth_jpeg(tmp_path / "b.jpg", 640, 480, seed=2)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])  # header fine, pixels cut off
    transform = MultiViewTransform([ViewSpec(64), ViewSpec(64)])
    samples = {}
    for reduced in (False, True):
        dataset = MultiViewDataset(ImageFolder(tmp_path, reduced), transform, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples[reduced] = dataset[(0, 0)]
    assert samples[True]["skipped"] == [str(tmp_path / "a.jpg")] == samples[False]["skipped"]
    boxes = {r: [v.geometry for v in s["views"]] for r, s in samples.items()}
    assert boxes[True] == boxes[False]


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_deferred_decode_has_the_dct_size(tmp_path, scale):
    smooth_jpeg(tmp_path / "a.jpg", 500, 375)
    image = DeferredJpeg.open(tmp_path / "a.jpg").decode(scale)
    assert image.size == (math.ceil(500 / scale), math.ceil(375 / scale)) and image.mode == "RGB"
