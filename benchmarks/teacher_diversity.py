"""How much do a DINO or SelfPatch teacher's outputs say about their input? A collapse check.

A DINO-style loss can fall without anything being learnt: when every input gets the same
teacher distribution (collapse to one shared distribution, flat or peaked), the student only
has to copy it. The measure is the mutual information between the input and the teacher's
prototype, estimated over a batch of real images:

    I = H(mean over inputs of p) - mean over inputs of H(p),    p = softmax((t - c) / tau_t)

with ``t`` the teacher's logits, ``c`` the run's centre and ``tau_t`` its final teacher
temperature. I = 0 nats means every input gets the same distribution; its ceiling is ln K.
"Inputs" are images for the image head and patches for SelfPatch's patch head.

    python benchmarks/teacher_diversity.py RUN [RUN ...] --images ../shared/data/camvid/train

Each RUN is a run folder with a checkpoint (e.g. one written by camvid_transfer.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from densessl.eval.features import normalise
from densessl.runs import open_run


def load_images(folder: Path, count: int, size: int) -> torch.Tensor:
    """The first ``count`` images of ``folder`` (sorted), centre ``size`` crops: (N, 3, s, s)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    images = []
    for path in paths[:count]:
        image = TF.center_crop(TF.resize(Image.open(path).convert("RGB"), size), size)
        images.append(TF.pil_to_tensor(image))
    return normalise(torch.stack(images))


def diversity(logits: torch.Tensor, centre: torch.Tensor, temperature: float) -> dict[str, float]:
    """logits (..., K) -> information and entropies, in nats, of the teacher's distributions."""
    p = F.softmax((logits - centre) / temperature, dim=-1).flatten(0, -2)  # (inputs, K)
    per_input = -(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean().item()
    mean = p.mean(dim=0)
    of_mean = -(mean * mean.clamp_min(1e-12).log()).sum().item()
    return {
        "information": of_mean - per_input,
        "entropy_per_input": per_input,
        "entropy_of_mean": of_mean,
        "distinct_top1": p.argmax(dim=-1).unique().numel(),
        "inputs": p.shape[0],
        "ln_k": math.log(p.shape[-1]),
    }


@torch.no_grad()
def measure(run: str, images: torch.Tensor) -> dict[str, dict[str, float]]:
    method, cfg = open_run(run)
    if cfg.method.name not in ("dino", "selfpatch"):
        print(f"{run}: a {cfg.method.name} run; give a dino or selfpatch run", file=sys.stderr)
        raise SystemExit(2)
    temperature = cfg.method.teacher_temp
    if cfg.method.name == "selfpatch":
        image_logits, patch_logits = method.teacher_outputs([images])
        return {
            "image head": diversity(image_logits[0], method.center, temperature),
            "patch head": diversity(patch_logits[0], method.patch_center, temperature),
        }
    logits = method.image_logits(method.teacher, [images])[0]
    return {"image head": diversity(logits, method.center, temperature)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="the runs' global view side")
    args = parser.parse_args()
    images = load_images(args.images, args.count, args.size)
    print("| run | head | I(input; prototype) | H per input | H of the mean | distinct top-1 |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        for head, d in measure(run, images).items():
            print(
                f"| {Path(run).name} | {head} | {d['information']:.2f} of ln K = {d['ln_k']:.2f} "
                f"| {d['entropy_per_input']:.2f} | {d['entropy_of_mean']:.2f} "
                f"| {d['distinct_top1']} of {d['inputs']} |"
            )


if __name__ == "__main__":
    main()
