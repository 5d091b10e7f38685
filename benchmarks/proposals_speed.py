"""Proposal speed and recovery: SoCo's reference selective search against densessl's routes.

For every image (the first ``--limit`` of a folder, or ``--scenes N`` built-in scenes), the
reference and each route run selective search, then SoCo's filter
(``densessl.data.proposals.filter_boxes``). The reference is SoCo's own Python code
(``selective_search/selective_search.py`` of hologerry/SoCo, a copy of AlpacaDB's
``selectivesearch`` with the texture bins over 0..255) with SoCo's ImageNet parameters (scale 300,
sigma 0.9, min_size 100) on the full-resolution image. It is not part of densessl: pass a local
copy of that file with ``--reference`` (it needs scikit-image importable), or install AlpacaDB's
package, whose texture bug is patched here as SoCo fixed it.

Routes (``--routes``, ``ROUTE@SIDE``; SIDE is the longer side searched, or ``full``):
``opencv`` (OpenCV-contrib's search), ``port`` (the reference algorithm in densessl, needs
scikit-image), ``port_opencv_segments`` (the port's grouping on OpenCV's segments).

Columns: seconds per image (one thread), boxes kept per image after the filter, recall of the
reference's filtered boxes at IoU >= 0.7 (pooled over images; per-image mean in brackets), the
speed-up over the reference, and the images whose unfiltered boxes are exactly the reference's.

The reference takes about a second per CamVid image; ``--reference-cache FILE.npz`` stores its
boxes and times so that routes can be measured in separate runs:

    PYTHONPATH=src:/path/to/scikit-image OMP_NUM_THREADS=2 python benchmarks/proposals_speed.py \\
        /work/shared/data/camvid/train --limit 100 --reference /path/to/selective_search.py \\
        --reference-cache camvid_ref.npz
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np

from densessl.data.built_in import DEFAULT_SCENES, built_in_scenes
from densessl.data.proposals import filter_boxes, selective_search
from densessl.data.sources import ImageFolder

RECALL_IOU = 0.7
DEFAULT_ROUTES = (
    "opencv@128,opencv@192,opencv@256,opencv@320,opencv@full,"
    "port@full,port@320,port@256,"
    "port_opencv_segments@full,port_opencv_segments@320,port_opencv_segments@256"
)


def reference_search(path: str | None):
    """The reference selective search as ``rgb -> (M, 4)`` boxes ``x, y, x + w, y + h``."""
    if path:
        spec = importlib.util.spec_from_file_location("soco_selective_search", path)
        package = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(package)
    else:
        try:
            import selectivesearch.selectivesearch as package
        except ImportError:
            raise SystemExit("no reference: pass --reference or install selectivesearch") from None

        def texture_histogram(region_pixels: np.ndarray) -> np.ndarray:
            # SoCo bins the LBP codes (0..255) over 0..255; the package bins them over 0..1
            # (its issue #30), which puts almost every code in the last bin.
            counts = [np.histogram(region_pixels[:, c], 10, (0.0, 255.0))[0] for c in range(3)]
            return np.concatenate(counts) / len(region_pixels)

        package._calc_texture_hist = texture_histogram

    def search(rgb: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # LBP on float images warns on every channel
            warnings.simplefilter("ignore")
            regions = package.selective_search(rgb, scale=300, sigma=0.9, min_size=100)[1]
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


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def load_or_run_reference(images, args) -> tuple[list[np.ndarray], list[float]]:
    """Unfiltered reference boxes and seconds per image, from the cache when it has them."""
    cache = Path(args.reference_cache) if args.reference_cache else None
    if cache and cache.exists():
        stored = np.load(cache)
        if int(stored["count"]) == len(images):
            offsets = stored["offsets"]
            boxes = [stored["boxes"][offsets[i] : offsets[i + 1]] for i in range(len(images))]
            return boxes, stored["seconds"].tolist()
    search = reference_search(args.reference)
    boxes, seconds = [], []
    for i, rgb in enumerate(images):
        found, spent = timed(search, rgb)
        boxes.append(found)
        seconds.append(spent)
        print(f"reference {i + 1}/{len(images)} {spent:.2f}s", flush=True)
    if cache:
        offsets = np.cumsum([0] + [len(b) for b in boxes])
        np.savez(cache, count=len(images), offsets=offsets, boxes=np.concatenate(boxes),
                 seconds=np.array(seconds))  # fmt: skip
    return boxes, seconds


def load_images(args) -> tuple[list[np.ndarray], str]:
    if args.scenes:
        source = built_in_scenes(DEFAULT_SCENES, args.scenes, 256, seed=0)
        where = f"{args.scenes} built-in '{DEFAULT_SCENES}' scenes (256 x 256, seed 0)"
    else:
        source = ImageFolder(args.data)
        where = args.data
    count = min(len(source), args.limit or len(source))
    return [np.asarray(source.load_image(i).convert("RGB")) for i in range(count)], where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="image folder, e.g. /work/shared/data/camvid/train")
    parser.add_argument("--scenes", type=int, help="use this many built-in scenes instead")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--reference", help="path of SoCo's selective_search/selective_search.py")
    parser.add_argument("--reference-cache", help=".npz of the reference's boxes and times")
    parser.add_argument("--routes", default=DEFAULT_ROUTES, help="ROUTE@SIDE,... (SIDE or full)")
    args = parser.parse_args()
    if not args.data and not args.scenes:
        parser.error("give an image folder or --scenes N")

    images, where = load_images(args)
    reference_raw, reference_seconds = load_or_run_reference(images, args)
    pairs = zip(images, reference_raw, strict=True)
    targets = [filter_boxes(raw, rgb.shape[:2]) for rgb, raw in pairs]
    total = sum(len(t) for t in targets)
    rows = []
    for spec in args.routes.split(","):
        route, side = spec.split("@")
        max_side = None if side == "full" else int(side)
        seconds, kept, per_image, recovered, exact = [], [], [], 0, 0
        for rgb, target, raw_reference in zip(images, targets, reference_raw, strict=True):
            start = time.perf_counter()
            raw = selective_search(rgb, max_side, route)
            found = filter_boxes(raw, rgb.shape[:2])
            seconds.append(time.perf_counter() - start)
            kept.append(len(found))
            hit = iou_matrix(target, found).max(axis=1) >= RECALL_IOU
            recovered += int(hit.sum())
            per_image.append(float(hit.mean()))
            exact += raw.shape == raw_reference.shape and bool((raw == raw_reference).all())
        name = f"{route}, {'full resolution' if max_side is None else f'longer side {side}'}"
        speedup = np.mean(reference_seconds) / np.mean(seconds)
        recall = f"{recovered / max(total, 1):.1%} ({np.mean(per_image):.1%})"
        rows.append([name, f"{np.mean(seconds):.3f}", f"{np.mean(kept):.1f}", recall,
                     f"{speedup:.1f}x", f"{exact}/{len(images)}"])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)

    sizes = sorted({rgb.shape[:2] for rgb in images})
    print(f"\n{len(images)} images of {where}, sizes (H, W): {sizes}; searches single-threaded\n")
    print("| route | s / image | boxes kept / image | recall of reference boxes @ IoU 0.7 "
          "| speed-up | exact |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    kept_reference = np.mean([len(t) for t in targets])
    print(f"| reference (SoCo's Python search), full resolution | {np.mean(reference_seconds):.3f}"
          f" | {kept_reference:.1f} | - | 1.0x | - |")  # fmt: skip
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
