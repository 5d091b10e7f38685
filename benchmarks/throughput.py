"""Training throughput of DenseCL (ResNet-50, 224 px) through the engine: images/s and, on a
GPU, the share of the time the GPU is busy.

Two rows, each a real engine step (``engine.step.train_step``: autocast, channels_last, the
fused optimizer, EMA, queues) on a session built by ``engine.session.open_session``:

- ``model only``: one augmented batch, already on the device, fed again and again (no loader);
- ``JPEG folder``: the benchmark's own folder of 500x375 JPEGs (quality 90) through densessl's
  loader with ``--workers`` processes (photometric augmentation on the device on a GPU);
- ``tar shards``: the same JPEGs as tar shards of 256 images (``densessl data shards``),
  read by index through the same loader.

GPU-busy share: the summed device time of every kernel (torch.profiler, CUDA activity) over the
timed steps divided by their wall time; near 1 means the GPU never waits for the data or the
host. On the CPU it is reported as n/a.

    python benchmarks/throughput.py                            # GPU: batch 256
    python benchmarks/throughput.py --compile --decode gpu     # the opt-in fast paths
    python benchmarks/throughput.py --backbone resnet18 --image-size 64 --batch-size 4 \
        --steps 2 --images 16                                  # a CPU smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from densessl.config import build_config
from densessl.data.batch_augment import augment_batch
from densessl.data.shard_writer import write_shards
from densessl.engine.session import open_session
from densessl.engine.step import step_state, train_step
from densessl.methods import get_method

sys.path.insert(0, str(Path(__file__).parent))
from loader_throughput import write_jpegs


def config(args, out: Path, data: Path | None):
    overrides = [
        f"backbone={args.backbone}", f"data.image_size={args.image_size}",
        f"batch_size={args.batch_size}", f"method.queue_size={args.queue_size}",
        f"steps={args.warmup + args.steps}", f"out={out}", f"data.workers={args.workers}",
        f"data.decode={args.decode}", f"compile={args.compile}", "log_every=1000000",
        "checkpoint_every=1000000", f"precision={args.precision}",
    ]  # fmt: skip
    if data is not None:
        overrides.append(f"data.path={data}")
    return build_config(get_method("densecl"), overrides=overrides)


def timed_steps(s, args) -> dict:
    """Warm-up steps, then ``args.steps`` timed ones; images/s and the GPU-busy share."""
    cuda = s.device.type == "cuda"
    for step in range(args.warmup):
        train_step(s, step_state(step, s.schedules, s.run))
    if cuda:
        torch.cuda.synchronize()
    profiler = None
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CUDA])
        profiler.__enter__()
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        train_step(s, step_state(step, s.schedules, s.run))  # .item() of the loss syncs
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    busy = None
    if profiler is not None:
        profiler.__exit__(None, None, None)
        kernel_us = sum(e.self_device_time_total for e in profiler.key_averages())
        busy = kernel_us / 1e6 / wall
    return {"images_per_sec": args.steps * args.batch_size / wall, "gpu_busy": busy}


def model_only(args, out: Path) -> dict:
    s = open_session(config(args, out, None))
    try:
        batch = augment_batch(next(s.batches).to(s.device))
        s.batches = itertools.repeat(batch)  # the same batch, already on the device
        return timed_steps(s, args)
    finally:
        s.close()
        s.release()


def from_folder(args, out: Path, folder: Path) -> dict:
    s = open_session(config(args, out, folder))
    try:
        return timed_steps(s, args)
    finally:
        s.close()
        s.release()


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256 if cuda else 8)
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=20 if cuda else 3)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 1)
    parser.add_argument("--images", type=int, default=2048 if cuda else 32, help="JPEG folder")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--decode", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--rows", default="model,folder", help="of model, folder, shards")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"setting: densecl {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
          f"queue {args.queue_size}, precision {args.precision}, compile {args.compile}, "
          f"decode {args.decode}, {args.warmup} warm-up + {args.steps} timed steps")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = {}
        if "model" in args.rows:
            rows["model only"] = model_only(args, root / "run_model")
        if "folder" in args.rows or "shards" in args.rows:
            write_jpegs(root / "images", args.images, 500, 375, 90)
        if "folder" in args.rows:
            rows[f"JPEG folder, {args.workers} workers"] = from_folder(
                args, root / "run_folder", root / "images"
            )
        if "shards" in args.rows:
            write_shards(root / "images", root / "shards", shard_size=256)
            rows[f"tar shards, {args.workers} workers"] = from_folder(
                args, root / "run_shards", root / "shards"
            )
    for name, row in rows.items():
        busy = "n/a (no GPU)" if row["gpu_busy"] is None else f"{row['gpu_busy']:.0%}"
        print(f"{name:28s} {row['images_per_sec']:9.1f} images/s   GPU busy {busy}")
    print(json.dumps({"device": device, **{k: v for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
