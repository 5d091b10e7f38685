"""Pictures of a run, written as PNG (matplotlib, headless).

- :func:`plot_correspondences`: DenseCL's figure, each query location linked to its best C5
  match in the other view: green within one cell of the truth, red otherwise, grey outside.
- :func:`plot_feature_pca`: the first three principal components of a dense feature map as RGB.
- :func:`plot_loss_curves`: every logged loss term of one or more runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.eval.correspondence import (
    cell_centres,
    correspondence_quality,
    dense_features,
    match_views,
    two_views,
)
from densessl.health import MEASURES, thresholds
from densessl.runs import read_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HEALTH_THRESHOLDS = thresholds()


def plot_loss_curves(runs: dict[str, Path], out: Path) -> Path:
    """One panel per logged loss term (total first), then one per health measure the runs
    logged (:mod:`densessl.health`, dashed: its collapse threshold); one line per run."""
    records = {name: read_metrics(d) for name, d in runs.items()}
    logged = {k for rs in records.values() for r in rs for k in r}
    terms = ["loss", *sorted(k for k in logged if k.startswith("loss_"))]
    terms += [k for k in HEALTH_THRESHOLDS if k in logged]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for name, rs in records.items():
            points = [(r["step"], r[term]) for r in rs if term in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        if term in HEALTH_THRESHOLDS:
            ax.axhline(HEALTH_THRESHOLDS[term], color="0.4", ls="--", lw=0.8)
        ax.set_title(MEASURES.get(term, term))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_correspondences(
    backbone: torch.nn.Module, image: Image.Image, out: Path, size: int = 224, seed: int = 0
) -> dict[str, float]:
    """Draw the DenseCL matches between two views of ``image``; returns match statistics."""
    views = two_views(image, size, seed)
    matched, (h, w) = match_views(backbone, views)
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
