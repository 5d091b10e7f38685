"""Views per second per data worker: densessl's loader beside the standard torchvision path.

The benchmark writes its own folder of JPEGs (500x375, quality 90 by default, ImageNet's most
common size) and times, in one process with one thread (what one data worker has), batches of
the DenseCL transform's two 224 px views:

- ``torchvision``: ``torchvision.datasets.ImageFolder`` (PIL decode) with MoCo-v2's two-crop
  transform (RandomResizedCrop(224, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
  RandomGrayscale 0.2, GaussianBlur sigma U(0.1, 2) p=0.5, flip, ToTensor, Normalize), batches
  of ``--batch-size`` by torch's default collate;
- ``densessl/worker``: densessl's own loader (``engine.setup.build_loader``) with the
  photometric augmentation applied in the worker, batched (CPU training);
- ``densessl/device``: the same loader as on a GPU, where the worker decodes and crops only and
  ships uint8 views, the photometric part running batched on the device after the transfer;
- each densessl row with reduced-size JPEG decoding off too (``data.reduced_decode=false``);
- ``densessl/worker, shards``: the same images as tar shards (``densessl data shards``, 16
  images each), read by index; shards decode in full, so compare with the full-decode row.

After the rows, the time to open each source: the folder listed, the folder from its cached
listing, the shards' member tables read, and the shards from their cached tables.

Rows are interleaved in rounds, so machine noise hits each alike; the figure is views/s over
all rounds.

    python benchmarks/loader_throughput.py
    python benchmarks/loader_throughput.py --image-size 96      # where reduced decoding helps
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder as TorchvisionImageFolder

from densessl.config import build_config
from densessl.data.data_path import open_image_source
from densessl.data.shard_writer import write_shards
from densessl.engine.setup import build_loader, build_source
from densessl.methods import build_method, get_method

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_jpegs(folder: Path, count: int, width: int, height: int, quality: int) -> None:
    """Photo-like JPEGs: smooth colour regions plus fine noise (so the files are as large as
    photos' at this quality, about 50-80 KB at 500x375)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
        noise = rng.normal(0, 12, size=(height, width, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=quality)


class TwoCrops:
    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image):
        return [self.transform(image), self.transform(image)]


def torchvision_loader(root: Path, size: int, batch_size: int) -> DataLoader:
    view = T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])  # fmt: skip
    dataset = TorchvisionImageFolder(str(root), transform=TwoCrops(view))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)


def open_seconds(data: Path) -> tuple[float, float]:
    """Seconds to open ``data`` as a source with an empty cache, then with the saved listing."""
    times = []
    for fresh in (True, False):
        if fresh:
            shutil.rmtree(os.environ["DENSESSL_CACHE_DIR"], ignore_errors=True)
        start = time.perf_counter()
        open_image_source(data)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def densessl_loader(folder: Path, size: int, batch_size: int, augment_on: str, reduced: bool):
    cfg = build_config(get_method("densecl"), overrides=[
        f"data.path={folder}", f"data.image_size={size}", f"batch_size={batch_size}",
        "data.workers=0", f"data.augment_on={augment_on}", f"data.reduced_decode={reduced}",
        "backbone=resnet18", "method.queue_size=16", "steps=1000000",
    ])  # fmt: skip
    return build_loader(cfg, build_source(cfg), build_method(cfg), torch.device("cpu"), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--image-size", type=int, default=224, help="view side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches-per-round", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one data worker's share
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "folder", Path(tmp)  # root: torchvision's class folders
        os.environ["DENSESSL_CACHE_DIR"] = str(work / "cache")
        write_jpegs(root / "images", args.images, args.width, args.height, args.quality)
        past = time.time() - 3600  # a folder nobody is writing to: its listing is saved
        os.utime(root / "images", (past, past))
        write_shards(root / "images", work / "shards", shard_size=16)
        opened = {"folder": open_seconds(root / "images"), "shards": open_seconds(work / "shards")}
        size, batch = args.image_size, args.batch_size
        loaders = {"torchvision": torchvision_loader(root, size, batch)}
        for augment_on in ("worker", "device"):
            for reduced in (True, False):
                name = f"densessl/{augment_on}" + ("" if reduced else " (full decode)")
                loaders[name] = densessl_loader(root / "images", size, batch, augment_on, reduced)
        loaders["densessl/worker, shards"] = densessl_loader(work / "shards", size, batch,
                                                             "worker", False)  # fmt: skip
        iterators = {name: iter(loader) for name, loader in loaders.items()}

        def take(name: str):
            try:
                return next(iterators[name])
            except StopIteration:
                iterators[name] = iter(loaders[name])
                return next(iterators[name])

        for name in loaders:  # warm-up
            take(name)
        seconds = dict.fromkeys(loaders, 0.0)
        names = list(loaders)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                for _ in range(args.batches_per_round):
                    take(name)
                seconds[name] += time.perf_counter() - start
    views = args.rounds * args.batches_per_round * batch * 2
    print(f"machine: {platform.processor() or platform.machine()}, 1 thread (one worker), "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"setting: {args.images} JPEGs {args.width}x{args.height} q{args.quality}, two "
          f"{size} px views per image, batch {batch}, {args.rounds} rounds x "
          f"{args.batches_per_round} batches")  # fmt: skip
    base = views / seconds["torchvision"]
    for name, s in seconds.items():
        print(f"{name:34s} {views / s:8.1f} views/s per worker   {views / s / base:.2f}x")
    for source, (fresh, cached) in opened.items():
        print(f"open {source:9s} {fresh * 1e3:7.1f} ms listed, {cached * 1e3:7.1f} ms cached")


if __name__ == "__main__":
    main()
