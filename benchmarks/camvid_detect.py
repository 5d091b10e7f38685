"""Detection on CamVid's boxes: does SoCo's or MCL's pretrained FPN and box head help a detector?

Each init (``random`` or a pretraining run folder named ``<method>_<setting>_s<N>``, as in
``camvid_finetune.py``) is fine-tuned with ``densessl eval detect`` at the same reduced settings
on the COCO set ``camvid_boxes.py`` writes, and scored on its val split (box AP, AP50, AP75 and
AP per class). A run that pretrained the FPN and box head (SoCo, MCL) starts the detector from
them (``heads=auto``); the others start those parts from scratch, as the protocol does.

    python benchmarks/camvid_boxes.py --data runs/camvid_heldout/seg --out runs/camvid_boxes
    python benchmarks/camvid_detect.py --boxes runs/camvid_boxes --labels 100% 10% \
        --inits random runs/camvid_pretrain/soco_new_s0 --seeds 0 --iterations N --out rows.json
    python benchmarks/camvid_detect.py --out rows.json --summary

Reduced settings (``--set`` changes any ``DetectOptions`` field): ResNet-18, Faster R-CNN with
torchvision's v2 heads (BN FPN, 4conv1fc box head) for every init, so only the starting weights
differ; CamVid's native 360 px (``min_size=360``, ``max_size=480``); batch 4; 128 sampled RoIs
an image (512 in the protocol) and 1000 / 300 RPN proposals kept in training / testing (2000 /
1000); ``--iterations``, the same for every init and label fraction. Rows accumulate in
``--out``; a row already there is not run again.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

# run as a script: benchmarks/ is on sys.path
from camvid_finetune import describe_init, mean_and_spread, pending_rows
from omegaconf import OmegaConf
from probe_rows import save_row

from densessl.eval.protocols.detect import evaluate

REDUCED = [
    "min_size=[360]", "max_size=480", "batch_size=4", "heads=v2",
    "detector_options.box_batch_size_per_image=128",
    "detector_options.rpn_post_nms_top_n_train=1000",
    "detector_options.rpn_post_nms_top_n_test=300",
]  # fmt: skip


def run(args: argparse.Namespace) -> None:
    overrides = [*REDUCED, f"iterations={args.iterations}", *args.set]
    for init, labels, seed, key in pending_rows(args):
        started = time.perf_counter()
        scores = evaluate(init, args.boxes, backbone="resnet18", overrides=overrides,
                          labels=labels, seed=seed)  # fmt: skip
        method, setting, _ = describe_init(init)
        row = {
            "init": init, "method": method, "setting": setting, "labels": labels,
            "seed": seed, "tag": args.tag, "overrides": overrides,
            "box_ap": round(scores.box_ap, 2), "box_ap50": round(scores.box_ap50, 2),
            "box_ap75": round(scores.box_ap75, 2), "heads": scores.heads,
            "pretrained_head_tensors": len(scores.extra_keys_used),
            "box_ap_per_class": {k: round(v, 2) for k, v in
                                 scores.box_ap_per_class.items()},
            "iterations": scores.iterations,
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        }  # fmt: skip
        save_row(args.out, key, row)
        print(f"{key}: box AP {scores.box_ap:.1f}, AP50 {scores.box_ap50:.1f} "
              f"({row['minutes']} min)", flush=True)  # fmt: skip


def summary(rows: dict, tag: str) -> None:
    """Per (method, setting, labels): box AP and AP50 mean ± sd over seeds, margin to random
    init paired by seed."""
    groups: dict[tuple[str, str, str], dict[int, dict]] = {}
    for row in rows.values():
        if row.get("tag", "") == tag:
            groups.setdefault((row["method"], row["setting"], row["labels"]), {})[row["seed"]] = row
    print("| init | pretraining pool | labels | seeds | box AP | AP50 | AP - random (paired) | "
          "min per run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for (method, setting, labels), by_seed in sorted(groups.items()):
        seeds = sorted(by_seed)
        base = groups.get(("random", "-", labels), {})
        gaps = [by_seed[s]["box_ap"] - base[s]["box_ap"] for s in seeds if s in base]
        margin = mean_and_spread(gaps, sign="+") if gaps and method != "random" else ""
        minutes = statistics.fmean(by_seed[s]["minutes"] for s in seeds)
        print(
            f"| {method} | {setting} | {labels} | {', '.join(map(str, seeds))} | "
            f"{mean_and_spread([by_seed[s]['box_ap'] for s in seeds])} | "
            f"{mean_and_spread([by_seed[s]['box_ap50'] for s in seeds])} | {margin} | "
            f"{minutes:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", help="camvid_boxes.py's output folder")
    parser.add_argument("--inits", nargs="+", default=["random"])
    parser.add_argument("--labels", nargs="+", default=["100%"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iterations", type=int, help="the same for every init and fraction")
    parser.add_argument("--set", action="append", default=[], help="DetectOptions KEY=VALUE")
    parser.add_argument("--tag", default="", help="names the settings variant")
    parser.add_argument("--out", type=Path, required=True, help="rows JSON (accumulates)")
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if args.summary:
        summary(json.loads(args.out.read_text()), args.tag)
        return
    if not args.boxes or not args.iterations:
        parser.error("--boxes and --iterations are required to run")
    OmegaConf.from_dotlist(args.set)  # a malformed KEY=VALUE fails before any training
    run(args)


if __name__ == "__main__":
    main()
