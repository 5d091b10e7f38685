"""The projection spread (densessl.health) of finished runs, beside freshly built networks: where
the collapse threshold of the embeddings a method's loss compares sits.

Each run is measured as its health check would measure it, on the first 64 images of its own
data at its view size; each ``--fresh`` method is built at ResNet-18 with its default settings
(and ``--set`` overrides) and measured on the first run's images.

    python benchmarks/projection_spread.py --runs runs/pixpro_camvid runs/densecl_camvid \
        --fresh pixpro densecl
"""

from __future__ import annotations

import argparse

import torch

from densessl.config import build_config
from densessl.data.data_path import open_image_source
from densessl.engine.health_check import evaluating, held_batch
from densessl.health import effective_rank, spread
from densessl.methods import build_method, get_method
from densessl.runs import open_run


def measured(method, images: torch.Tensor) -> str:
    with torch.no_grad(), evaluating(method):
        rows = method.projections(images)
    return f"{tuple(rows.shape)!s:14s} spread {spread(rows):.3f}  rank {effective_rank(rows):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--fresh", nargs="*", default=[], help="methods to build at init")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for --fresh")
    args = parser.parse_args()
    torch.set_num_threads(2)
    first_images = None
    for run in args.runs:
        method, cfg = open_run(run)
        images = held_batch(open_image_source(cfg.data.path), cfg.data.image_size)
        first_images = images if first_images is None else first_images
        print(f"{run}: {measured(method, images)}")
    for name in args.fresh:
        torch.manual_seed(0)
        cfg = build_config(get_method(name), overrides=["backbone=resnet18", *args.set])
        print(f"fresh {name} {' '.join(args.set)}: {measured(build_method(cfg), first_images)}")


if __name__ == "__main__":
    main()
