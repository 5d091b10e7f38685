"""densessl's DenseCL step beside a minimal DenseCL built from torchvision and plain torch.

Both get the same augmented views (densessl's data path, seed 0), the same queue length, the
same SGD (momentum 0.9, weight decay 1e-4) and learning rate; the minimal model is in
``benchmarks/minimal_densecl.py`` and imports nothing of densessl. A step is forward, backward,
optimizer step, EMA and enqueue on a fixed batch. Steps of all runners are interleaved in
rounds (the order rotating each round) so machine noise hits each alike; the figure is the
median step time. Extra densessl runners with other settings can be added with ``--variant``
(name:key=value,key=value), e.g. to see what channels_last or the fused optimizer each give.

    python benchmarks/vs_minimal_densecl.py                 # ResNet-50, 224 px, batch 8
    python benchmarks/vs_minimal_densecl.py \
        --variant plain:memory_format=contiguous,optim.implementation=loop
    python benchmarks/vs_minimal_densecl.py --profile densessl   # where the time goes
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from densessl.config import build_config
from densessl.data.batch import collate_views
from densessl.data.batch_augment import augment_batch
from densessl.data.pretrain import MultiViewDataset
from densessl.data.synthetic import SyntheticScenes
from densessl.engine.fast_path import (
    apply_memory_format,
    batch_in_memory_format,
    resolve_memory_format,
)
from densessl.engine.optim import build_optimizer
from densessl.engine.step import bare_step, step_state
from densessl.methods import build_method, get_method
from densessl.schedules import RunLength

sys.path.insert(0, str(Path(__file__).parent))
from minimal_densecl import MinimalDenseCL, minimal_optimizer

RUN = RunLength(total_steps=1000, steps_per_epoch=100)
LR = 0.03


def densessl_runner(args, overrides: list[str]):
    """A step function of densessl's DenseCL with the engine's settings plus ``overrides``."""
    cfg = build_config(get_method("densecl"), overrides=[
        f"backbone={args.backbone}", f"data.image_size={args.image_size}",
        f"method.queue_size={args.queue_size}", f"optim.base_lr={LR}", *overrides,
    ])  # fmt: skip
    torch.manual_seed(0)
    method = build_method(cfg)
    memory_format = resolve_memory_format(cfg)
    apply_memory_format(method, memory_format)
    optimizer = build_optimizer(method.named_parameters(), cfg.optim)

    def step(batch, i: int) -> None:
        batch = batch_in_memory_format(batch, memory_format)
        bare_step(method, batch, step_state(i, method.schedules(), RUN), optimizer)

    return step


def minimal_runner(args):
    torch.manual_seed(0)
    model = MinimalDenseCL(args.backbone, queue_size=args.queue_size)
    optimizer = minimal_optimizer(model, LR)

    def step(batch, i: int) -> None:
        query, key = batch.views
        model(query, key).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.after_step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--queue-size", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], help="name:key=value,...")
    parser.add_argument("--profile", default=None, help="profile 2 steps of this runner only")
    args = parser.parse_args()

    runners = {"minimal": minimal_runner(args), "densessl": densessl_runner(args, [])}
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        runners[name] = densessl_runner(args, [s for s in settings.split(",") if s])
    scenes = SyntheticScenes(num_images=args.batch_size, image_size=int(args.image_size * 1.33))
    cfg = build_config(get_method("densecl"), overrides=[f"data.image_size={args.image_size}"])
    dataset = MultiViewDataset(scenes, build_method(cfg).make_transform(), seed=0)
    batch = augment_batch(collate_views([dataset[(0, i)] for i in range(args.batch_size)]))

    for step in runners.values():  # warm-up: allocator, oneDNN primitive caches
        for i in range(2):
            step(batch, i)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(2):
                runners[args.profile](batch, i)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for i in range(args.steps_per_round):
                runners[name](batch, i)
            times[name].append((time.perf_counter() - start) / args.steps_per_round)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}")  # fmt: skip
    print(f"setting: {args.backbone}, {args.image_size} px, batch {args.batch_size}, queue "
          f"{args.queue_size}, SGD, {args.rounds} rounds x {args.steps_per_round} "
          "steps")  # fmt: skip
    for name, value in median.items():
        speed = median["minimal"] / value
        print(f"{name:12s} median step {value * 1000:8.1f} ms   throughput vs minimal {speed:.3f}x")


if __name__ == "__main__":
    main()
