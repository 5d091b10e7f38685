"""The pictures: the correspondence check against known geometry, PCA colours, PNG output."""

from __future__ import annotations

import torch

from densessl.data.synthetic import SyntheticScenes
from densessl.data.views import View, ViewGeometry
from densessl.models import build_backbone
from densessl.viz import correspondence_quality, pca_rgb, plot_correspondences, plot_feature_pca


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


def test_pca_rgb_separates_the_main_directions():
    features = torch.zeros(8, 2, 2)
    features[0, 0, 0] = features[1, 0, 1] = features[2, 1, 0] = 5.0
    rgb = pca_rgb(features)
    assert rgb.shape == (2, 2, 3) and rgb.min() >= 0 and rgb.max() <= 1
    colours = {tuple(rgb[i, j].round(decimals=3).tolist()) for i in range(2) for j in range(2)}
    assert len(colours) == 4  # four distinct feature vectors, four distinct colours


def test_figures_are_written(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    scenes = SyntheticScenes(num_images=2, image_size=96)
    stats = plot_correspondences(backbone, scenes.load_image(0), tmp_path / "m.png", size=96)
    assert 0 <= stats["scored_locations"] <= 9
    plot_feature_pca(backbone, [scenes.load_image(1)], tmp_path / "p.png", size=96)
    for name in ("m.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
