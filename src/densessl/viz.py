"""Pictures of a run, written as PNG (matplotlib, headless).

- :func:`plot_correspondences`: DenseCL's figure: two views of one image and, for each query
  location, a line to the key location of highest C5 cosine similarity (the positive DenseCL
  trains with). Because views carry their geometry, each line is also checked against the true
  correspondence: green when the match lands within one grid cell of where that point really is
  in the other view, red otherwise, grey when the point is outside the other view.
- :func:`plot_feature_pca`: the first three principal components of a dense feature map as RGB.
- :func:`plot_loss_curves`: every logged loss term of one or more runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.data.views import MultiViewTransform, PhotometricSpec, View, moco_v2_views
from densessl.device import module_device
from densessl.eval.features import normalise
from densessl.models.matching import match_by_similarity
from densessl.runs import read_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt

NO_COLOUR_CHANGE = PhotometricSpec(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def plot_loss_curves(runs: dict[str, Path], out: Path) -> Path:
    """One panel per logged loss term (total first), one line per run."""
    records = {name: read_metrics(d) for name, d in runs.items()}
    term_names = {k for rs in records.values() for r in rs for k in r if k.startswith("loss_")}
    terms = ["loss", *sorted(term_names)]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for name, rs in records.items():
            points = [(r["step"], r[term]) for r in rs if term in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@torch.no_grad()
def dense_features(backbone: torch.nn.Module, pixels: torch.Tensor, level: str = "c5"):
    """(C, h, w) features of one uint8 (3, H, W) image; the backbone runs in eval mode."""
    device = module_device(backbone)
    return backbone.eval()(normalise(pixels[None]).to(device))[level][0].float().cpu()


def two_views(image: Image.Image, size: int, seed: int = 0) -> list[View]:
    """Two MoCo-v2 crops of ``image`` (geometry only, colours untouched, for display)."""
    specs = [replace(s, photometric=NO_COLOUR_CHANGE) for s in moco_v2_views(size)]
    return MultiViewTransform(specs)(image, torch.Generator().manual_seed(seed))


def cell_centres(h: int, w: int, view_size: tuple[int, int]) -> torch.Tensor:
    """(h*w, 2) centres (x, y), in view pixels, of an h x w feature grid over the view."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    scale = torch.tensor([view_size[1] / w, view_size[0] / h])
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * scale


def correspondence_quality(views: list[View], matched: torch.Tensor, grid: tuple[int, int]):
    """Classify each query cell's match: 1 correct, 0 wrong, -1 point not in the key view.

    The true location of query cell i in the key view is its centre mapped view -> source ->
    key view; the match is correct when the matched key cell contains a point within one cell of
    that location (Chebyshev distance in cells ≤ 1).
    """
    h, w = grid
    query, key = views[0].geometry, views[1].geometry
    truth = key.source_to_view(query.view_to_source(cell_centres(h, w, query.output_size)))
    kh, kw = key.output_size
    inside = (truth[:, 0] >= 0) & (truth[:, 0] < kw) & (truth[:, 1] >= 0) & (truth[:, 1] < kh)
    true_cell = torch.stack([truth[:, 0] * w / kw, truth[:, 1] * h / kh], -1).floor()
    matched_cell = torch.stack([matched % w, matched // w], -1).float()
    correct = (true_cell - matched_cell).abs().amax(dim=1) <= 1
    return torch.where(inside, correct.long(), torch.full_like(correct, -1, dtype=torch.long))


def plot_correspondences(
    backbone: torch.nn.Module, image: Image.Image, out: Path, size: int = 224, seed: int = 0
) -> dict[str, float]:
    """Draw the DenseCL matches between two views of ``image``; returns match statistics."""
    views = two_views(image, size, seed)
    q_feat, k_feat = (dense_features(backbone, v.pixels) for v in views)
    c, h, w = q_feat.shape
    matched = match_by_similarity(q_feat.reshape(c, -1).t()[None], k_feat.reshape(c, -1).t()[None])[
        0
    ]
    quality = correspondence_quality(views, matched, (h, w))
    q_xy = cell_centres(h, w, views[0].geometry.output_size)
    k_xy = cell_centres(h, w, views[1].geometry.output_size)[matched]
    gap = 12
    offset = views[0].geometry.output_size[1] + gap
    canvas_w = offset + views[1].geometry.output_size[1]
    height = max(v.geometry.output_size[0] for v in views)
    fig, ax = plt.subplots(figsize=(canvas_w / 60, height / 60 + 0.4))
    ax.imshow(views[0].pixels.permute(1, 2, 0).numpy(), extent=(0, offset - gap, size, 0))
    ax.imshow(views[1].pixels.permute(1, 2, 0).numpy(), extent=(offset, canvas_w, size, 0))
    colours = {1: "limegreen", 0: "red", -1: "0.6"}
    for (x0, y0), (x1, y1), q in zip(q_xy.tolist(), k_xy.tolist(), quality.tolist(), strict=True):
        ax.plot([x0, x1 + offset], [y0, y1], color=colours[q], lw=0.8, alpha=0.8)
        ax.plot([x0], [y0], "o", color=colours[q], ms=2)
    scored = quality >= 0
    accuracy = float((quality[scored] == 1).float().mean()) if scored.any() else float("nan")
    ax.set_xlim(0, canvas_w)
    ax.set_ylim(size, 0)
    ax.axis("off")
    ax.set_title(
        f"left: query locations; right: their best C5 match ({h}x{w} grid)\n"
        f"{accuracy:.0%} within one cell of the true point (green), wrong (red), "
        f"not in the right view (grey, {int((quality == -1).sum())})",
        fontsize=7,
    )
    _save(fig, out)
    return {"match_accuracy": accuracy, "scored_locations": int(scored.sum())}


def pca_rgb(features: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (h, w, 3) in [0, 1]: the first three principal components, min-max scaled."""
    c, h, w = features.shape
    x = features.reshape(c, -1).t().double()
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    projected = x @ v[:3].t()  # (h*w, 3)
    low, high = projected.amin(dim=0), projected.amax(dim=0)
    return ((projected - low) / (high - low).clamp_min(1e-12)).reshape(h, w, 3).float()


def plot_feature_pca(
    backbone: torch.nn.Module,
    images: list[Image.Image],
    out: Path,
    size: int = 224,
    level: str = "c5",
) -> Path:
    """Each image beside the PCA-to-RGB map of its dense features."""
    fig, axes = plt.subplots(2, len(images), figsize=(2.4 * len(images), 4.8), squeeze=False)
    for column, image in enumerate(images):
        resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)
        rgb = pca_rgb(dense_features(backbone, pixels, level))
        upsampled = F.interpolate(rgb.permute(2, 0, 1)[None], size=(size, size), mode="nearest")
        axes[0][column].imshow(pixels.permute(1, 2, 0).numpy())
        axes[1][column].imshow(upsampled[0].permute(1, 2, 0).numpy())
        for row in (0, 1):
            axes[row][column].axis("off")
    axes[1][0].set_title(f"PCA of {level} features", fontsize=8, loc="left")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
