"""The pictures: PCA colours, PNG output."""

from __future__ import annotations

import torch

from densessl.data.synthetic import SyntheticScenes
from densessl.models import build_backbone
from densessl.viz import pca_rgb, plot_correspondences, plot_feature_pca


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
