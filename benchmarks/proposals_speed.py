"""Proposal speed and recovery: the reference's Python selective search vs OpenCV down-scaled.

For every image of a folder (the first ``--limit``), each route runs selective search and SoCo's
filter (``densessl.data.proposals.filter_boxes``). The reference route is the ``selectivesearch``
package (AlpacaDB), the code SoCo copied, with SoCo's one change (texture histograms binned over
0..255) and SoCo's ImageNet parameters (scale 300, sigma 0.9, min_size 100) on the full-resolution
image. When that package is not installed, OpenCV at full resolution stands in for it, and the
table says so. Recall: the share of the reference's filtered boxes that some box of the route
matches with IoU >= 0.7 (pooled over images; per-image mean in brackets); a second recall column
measures the same against OpenCV's own full-resolution boxes, which isolates the down-scaling.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proposals_speed.py /work/shared/data/camvid/train
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from densessl.data.proposals import filter_boxes, selective_search
from densessl.data.sources import ImageFolder

RECALL_IOU = 0.7


def reference_search():
    """The reference selective search as ``rgb -> (M, 4) xyxy``, or None if not installed."""
    try:
        import selectivesearch.selectivesearch as package
    except ImportError:
        return None

    def texture_histogram(region_pixels: np.ndarray) -> np.ndarray:
        # SoCo bins the LBP codes (0..255) over 0..255; the package bins them over 0..1
        # (its issue #30), which puts almost every code in the last bin.
        counts = [np.histogram(region_pixels[:, c], 10, (0.0, 255.0))[0] for c in range(3)]
        return np.concatenate(counts) / len(region_pixels)

    package._calc_texture_hist = texture_histogram

    def search(rgb: np.ndarray) -> np.ndarray:
        _, regions = package.selective_search(rgb, scale=300, sigma=0.9, min_size=100)
        rects = np.array([r["rect"] for r in regions], dtype=np.float64).reshape(-1, 4)
        # (x, y, w, h) with w = max_x - min_x; the reference loads it as x2 = x + w - 1
        # inclusive, i.e. x + w in continuous coordinates.
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)

    return search


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def search_and_filter(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    return filter_boxes(selective_search(rgb, max_side), rgb.shape[:2])


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="image folder, e.g. /work/shared/data/camvid/train")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument(
        "--sides", default="128,192,256,320", help="longer sides tried for the fast route"
    )
    args = parser.parse_args()

    source = ImageFolder(args.data)
    count = min(len(source), args.limit or len(source))
    reference = reference_search()
    if reference is None:
        print("selectivesearch is not installed: OpenCV at full resolution is the reference")
        reference_name = "OpenCV, full resolution (stand-in)"
        reference = lambda rgb: selective_search(rgb, None)  # noqa: E731
    else:
        reference_name = "reference Python (selectivesearch + SoCo fix), full resolution"
    sides = [int(s) for s in args.sides.split(",")]
    routes = {f"OpenCV, longer side {s}": s for s in sides} | {"OpenCV, full resolution": None}

    seconds = {name: [] for name in [reference_name, *routes]}
    kept = {name: [] for name in seconds}
    recovered, per_image = {name: 0 for name in routes}, {name: [] for name in routes}
    recovered_full = {name: 0 for name in routes}
    total = total_full = 0
    sizes = set()
    for i in range(count):
        rgb = np.asarray(source.load_image(i))
        sizes.add(rgb.shape[:2])
        raw, spent = timed(reference, rgb)
        target = filter_boxes(raw, rgb.shape[:2])
        seconds[reference_name].append(spent)
        kept[reference_name].append(len(target))
        total += len(target)
        found = {}
        for name, side in routes.items():
            found[name], spent = timed(search_and_filter, rgb, side)
            seconds[name].append(spent)
            kept[name].append(len(found[name]))
            hit = iou_matrix(target, found[name]).max(axis=1) >= RECALL_IOU
            recovered[name] += int(hit.sum())
            per_image[name].append(float(hit.mean()))
        full = found["OpenCV, full resolution"]
        total_full += len(full)
        for name in routes:
            recovered_full[name] += int((iou_matrix(full, found[name]).max(axis=1) >= 0.7).sum())
        print(f"{i + 1}/{count} {source.describe(i)}", flush=True)

    print(f"\n{count} images of {args.data}, sizes (H, W): {sorted(sizes)}; 1 thread per search\n")
    print(
        "| route | s / image (mean) | boxes kept / image | recall of reference boxes "
        "@ IoU 0.7 | recall of OpenCV full-res boxes |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in seconds:
        recall = recall_full = "-"
        if name != reference_name:
            recall = f"{recovered[name] / max(total, 1):.1%} ({np.mean(per_image[name]):.1%})"
            recall_full = f"{recovered_full[name] / max(total_full, 1):.1%}"
        row = [name, f"{np.mean(seconds[name]):.3f}", f"{np.mean(kept[name]):.1f}"]
        print("| " + " | ".join([*row, recall, recall_full]) + " |")


if __name__ == "__main__":
    main()
