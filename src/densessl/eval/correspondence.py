"""Correspondence accuracy: do a backbone's dense features find the same point in two views?

Two MoCo-v2 crops of one image (colours untouched) are encoded; each cell of the first grid is
matched to the most cosine-similar cell of the second (DenseCL's positive). A match is correct
within one cell (Chebyshev) of the true cell, known from the crop geometry; points outside the
second view are not scored::

    accuracy = correct / scored
    chance   = mean over scored cells of |{key cells within one cell of the true cell}| / (h * w)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

import torch
from PIL import Image

from densessl.data.views import MultiViewTransform, PhotometricSpec, View, moco_v2_views
from densessl.device import module_device
from densessl.eval.features import normalise
from densessl.models.matching import match_by_similarity

NO_COLOUR_CHANGE = PhotometricSpec(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


@torch.no_grad()
def dense_features(backbone: torch.nn.Module, pixels: torch.Tensor, level: str = "c5"):
    """(C, h, w) features of one uint8 (3, H, W) image; the backbone runs in eval mode."""
    device = module_device(backbone)
    return backbone.eval()(normalise(pixels[None]).to(device))[level][0].float().cpu()


def two_views(image: Image.Image, size: int, seed: int = 0) -> list[View]:
    """Two MoCo-v2 crops of ``image`` (geometry only, colours untouched)."""
    specs = [replace(s, photometric=NO_COLOUR_CHANGE) for s in moco_v2_views(size)]
    return MultiViewTransform(specs)(image, torch.Generator().manual_seed(seed))


def cell_centres(h: int, w: int, view_size: tuple[int, int]) -> torch.Tensor:
    """(h*w, 2) centres (x, y), in view pixels, of an h x w feature grid over the view."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    scale = torch.tensor([view_size[1] / w, view_size[0] / h])
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * scale


def true_cells(views: list[View], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query cell: the (x, y) key cell holding its centre, (h*w, 2), and whether that
    point is inside the key view, (h*w,) bool."""
    h, w = grid
    query, key = views[0].geometry, views[1].geometry
    truth = key.source_to_view(query.view_to_source(cell_centres(h, w, query.output_size)))
    kh, kw = key.output_size
    inside = (truth[:, 0] >= 0) & (truth[:, 0] < kw) & (truth[:, 1] >= 0) & (truth[:, 1] < kh)
    return torch.stack([truth[:, 0] * w / kw, truth[:, 1] * h / kh], -1).floor(), inside


def correspondence_quality(views: list[View], matched: torch.Tensor, grid: tuple[int, int]):
    """Each query cell's match (a flat key-cell index, (h*w,)): 1 correct, 0 wrong, -1 point
    not in the key view."""
    w = grid[1]
    truth, inside = true_cells(views, grid)
    matched_cell = torch.stack([matched % w, matched // w], -1).float()
    correct = (truth - matched_cell).abs().amax(dim=1) <= 1
    return torch.where(inside, correct.long(), torch.full_like(correct, -1, dtype=torch.long))


def chance_of_match(views: list[View], grid: tuple[int, int]) -> torch.Tensor:
    """(scored cells,) the share of key cells within one cell of each scored cell's truth."""
    h, w = grid
    truth, inside = true_cells(views, grid)
    x, y = truth[inside, 0], truth[inside, 1]
    columns = (x + 1).clamp(max=w - 1) - (x - 1).clamp(min=0) + 1
    rows = (y + 1).clamp(max=h - 1) - (y - 1).clamp(min=0) + 1
    return columns * rows / (h * w)


def match_views(backbone: torch.nn.Module, views: list[View], level: str = "c5"):
    """The best key cell of every query cell, (h*w,), and the grid (h, w)."""
    q_feat, k_feat = (dense_features(backbone, v.pixels, level) for v in views)
    c, h, w = q_feat.shape
    flat = [f.reshape(c, -1).t()[None] for f in (q_feat, k_feat)]
    return match_by_similarity(*flat)[0], (h, w)


@dataclass(frozen=True)
class CorrespondenceScore:
    accuracy: float  # percent of scored cells matched within one cell
    chance: float  # percent a uniformly drawn match would score
    scored: int  # cells whose point lies in the other view

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "chance": self.chance, "scored": self.scored}


def correspondence_accuracy(
    backbone: torch.nn.Module,
    images: list[Image.Image],
    size: int,
    level: str = "c5",
    seed: int = 0,
) -> CorrespondenceScore:
    """Accuracy and chance over one view pair per image, drawn by ``seed`` + the image's index."""
    correct, chance = [], []
    for index, image in enumerate(images):
        views = two_views(image, size, seed + index)
        matched, grid = match_views(backbone, views, level)
        quality = correspondence_quality(views, matched, grid)
        correct += (quality[quality >= 0] == 1).tolist()
        chance += chance_of_match(views, grid).tolist()
    if not correct:
        return CorrespondenceScore(float("nan"), float("nan"), 0)
    return CorrespondenceScore(
        100 * statistics.fmean(correct), 100 * statistics.fmean(chance), len(correct)
    )
