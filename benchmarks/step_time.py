"""A dense method's training-step time beside its image-level base, measured in one run.

Both methods get the same backbone, batch, image size and crops (and queue, for the MoCo
family); steps of the two are interleaved in rounds (alternating which goes first) so machine
noise hits both alike. A step is forward + backward + optimizer step + EMA/queue/centre update on
a fixed, already augmented batch, so the ratio isolates the method's compute (data loading is
identical for both).

    python benchmarks/step_time.py --backbone resnet18 --image-size 96 --batch-size 32
    python benchmarks/step_time.py --pair dino,selfpatch --backbone vit_tiny_patch16 \
        --image-size 128 --local-crops 2 --local-crop-size 64 --batch-size 16
    python benchmarks/step_time.py --pair byol,soco --backbone resnet50 --image-size 224 \
        --batch-size 8
    python benchmarks/step_time.py --pair byol,mcl --backbone resnet18 --image-size 224 \
        --batch-size 8

BYOL vs SoCo: SoCo's views are its own (V1 224, V2 224, V3 112 at the paper's size, with
``--image-size`` setting V1/V2) and BYOL gets its two views at ``--image-size``; the scenes'
instance boxes stand in for selective-search proposals (the step does not depend on which
boxes they are). BYOL vs MCL: MCL's eight views (four per branch, levels 0-3) at ``--image-size``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from densessl.config import build_config
from densessl.data.batch import Batch, collate_views
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


def build(method_name: str, args: argparse.Namespace, device: torch.device):
    overrides = [f"backbone={args.backbone}", f"data.image_size={args.image_size}", *args.set]
    if method_name in ("mocov2", "densecl"):
        overrides.append(f"method.queue_size={args.queue_size}")
    elif method_name in ("dino", "selfpatch"):  # multi-crop
        overrides += [
            f"method.local_crops={args.local_crops}",
            f"method.local_crop_size={args.local_crop_size}",
        ]
    cfg = build_config(get_method(method_name), overrides=overrides)
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    memory_format = resolve_memory_format(cfg)  # as the engine runs it (channels_last on CNNs)
    apply_memory_format(method, memory_format)
    optimizer = build_optimizer(method.named_parameters(), cfg.optim)
    return method, optimizer, memory_format


RUN = RunLength(total_steps=1000, steps_per_epoch=100)


def step(method, optimizer, batch, i: int) -> None:
    bare_step(method, batch, step_state(i, method.schedules(), RUN), optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="mocov2,densecl", help="base,dense method names")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--local-crops", type=int, default=8, help="DINO family")
    parser.add_argument("--local-crop-size", type=int, default=96, help="DINO family")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for both")
    args = parser.parse_args()
    device = torch.device(args.device)

    base, dense = args.pair.split(",")
    runners = {name: build(name, args, device) for name in (base, dense)}
    scenes = SyntheticScenes(num_images=args.batch_size, image_size=int(args.image_size * 1.33))

    def batch_for(method) -> Batch:
        """The method's own views of the same scenes (seed 0): two for MoCo/BYOL, SoCo's boxed
        views, MCL's eight, DINO's multi-crop."""
        # the scenes' own boxes stand in for selective search (not what a run uses)
        proposals = (lambda i: scenes.scene(i).boxes) if method.needs_proposals else None
        dataset = MultiViewDataset(scenes, method.make_transform(), seed=0, proposals=proposals)
        samples = [dataset[(0, i)] for i in range(args.batch_size)]
        return augment_batch(collate_views(samples)).to(device)

    batches = {
        name: batch_in_memory_format(batch_for(method), memory_format)
        for name, (method, _, memory_format) in runners.items()
    }

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for name, (method, opt, _) in runners.items():  # warm-up
        for i in range(2):
            step(method, opt, batches[name], i)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            method, opt, _ = runners[name]
            sync()
            start = time.perf_counter()
            for i in range(args.steps_per_round):
                step(method, opt, batches[name], i)
            sync()
            times[name].append((time.perf_counter() - start) / args.steps_per_round)

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, device {device}, torch {torch.__version__}")  # fmt: skip
    crops = {
        "mocov2": f"queue {args.queue_size}",
        "dino": f"{args.local_crops} local crops at {args.local_crop_size} px",
    }.get(base, "each method's own views")
    print(
        f"setting: {args.backbone}, {args.image_size} px, batch {args.batch_size}, {crops}, "
        f"{args.rounds} rounds x {args.steps_per_round} steps"
    )
    for name, value in median.items():
        print(f"{name:9s} median step {value * 1000:8.1f} ms")
    ratio = median[dense] / median[base]
    print(f"{dense} / {base} step-time ratio: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")
    # The two methods of one round ran back to back, so their ratio cancels the machine's slow
    # drift (on a shared VM, step times move by several percent between minutes).
    paired = sorted(d / b for d, b in zip(times[dense], times[base], strict=True))
    quarter = len(paired) // 4
    spread = f"{paired[quarter]:.3f}-{paired[-quarter - 1]:.3f}"
    print(f"paired per round: median {statistics.median(paired):.3f}, interquartile {spread}, "
          f"{len(paired)} rounds")  # fmt: skip


if __name__ == "__main__":
    main()
