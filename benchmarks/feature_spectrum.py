"""How many directions do frozen dense features use, and how much class is linear in them?

The linear probe standardises every channel (BatchNorm) and fits a 1x1 convolution, so what it
can use is the spread of the *standardised* features over their directions. For each backbone
this prints, over the cells of the demo's held-out probe scenes (frozen C4 + C5, 128 px):

- the effective rank exp(H(λ / Σλ)) of the channels' correlation matrix (λ its eigenvalues):
  how many directions the features really spread over, out of C channels;
- the directions holding 90% of that variance;
- the between-class share of the variance: tr(S_between) / tr(S_total) of the standardised
  cells, labelled by their majority class (1 = cells of a class are all alike and classes
  differ; 0 = the class explains none of the spread).

    python benchmarks/feature_spectrum.py random runs/demo/resnet18_mocov2.pt ...
"""

from __future__ import annotations

import argparse
import math

import torch

from densessl.demo import PROBE_LEVELS, PROBE_SIZE, probe_sets
from densessl.eval.features import DenseFeatures, extract_features
from densessl.eval.knn_seg import patch_label_histograms
from densessl.eval.weights import load_backbone


def cell_classes(data: DenseFeatures) -> torch.Tensor:
    """(N * h * w,) majority class of every cell, in the order of the flattened features."""
    per_image = [
        patch_label_histograms(labels, data.stride, data.num_classes, data.ignore_index)
        for labels in data.labels
    ]
    return torch.cat(per_image).argmax(dim=1)


def spectrum(features: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """features (M, C) float, classes (M,) int64 -> rank and class-share statistics."""
    x = (features - features.mean(0)) / features.std(0).clamp_min(1e-6)
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / len(x)).clamp_min(0).flip(0)
    share = eigenvalues / eigenvalues.sum()
    effective_rank = math.exp(-(share * share.clamp_min(1e-12).log()).sum().item())
    ninety = int((share.cumsum(0) < 0.9).sum().item()) + 1
    between = sum(
        (classes == c).sum() * x[classes == c].mean(0).pow(2).sum() for c in classes.unique()
    )
    return {
        "effective_rank": effective_rank,
        "directions_90": ninety,
        "channels": x.shape[1],
        "between_class_share": (between / x.pow(2).sum()).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="'random' or exported ResNet-18 weights")
    parser.add_argument("--seed", type=int, default=0, help="the demo seed of the probe scenes")
    parser.add_argument("--size", type=int, default=PROBE_SIZE, help="probe scenes' side, px")
    args = parser.parse_args()
    _, val_set = probe_sets(args.seed, args.size)
    print("| backbone | effective rank | directions for 90% | channels | between-class share |")
    print("|---|---|---|---|---|")
    for weights in args.weights:
        backbone = load_backbone(weights, "resnet18")
        data = extract_features(backbone, val_set, list(PROBE_LEVELS), args.size)
        classes = cell_classes(data)
        cells = data.features.float().permute(0, 2, 3, 1).flatten(0, 2)
        s = spectrum(cells, classes)
        print(
            f"| {weights} | {s['effective_rank']:.1f} | {s['directions_90']} | {s['channels']} "
            f"| {s['between_class_share']:.3f} |"
        )


if __name__ == "__main__":
    main()
