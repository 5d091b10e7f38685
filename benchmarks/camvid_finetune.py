"""Fine-tuning on CamVid's held-out sequence: does pretraining help a segmenter on new scenes?

Each init (``random`` or a pretraining run folder) is fine-tuned with ``densessl eval
finetune-seg``'s recipe on a labelled subset of the training split built by
``benchmarks/camvid_heldout.py`` and scored on the held-out sequence. A run folder named
``<method>_<setting>_s<N>`` is fine-tuned at seed N only (its pretraining seed), so each
pretraining seed pairs with the subset and crops of the same fine-tuning seed as random init's.

    python benchmarks/camvid_finetune.py --split runs/camvid_heldout --labels 10% \
        --inits random runs/camvid_pretrain/densecl_all_s0 --seeds 0 1 2 --out rows.json
    python benchmarks/camvid_finetune.py --out rows.json --summary   # the table

Rows accumulate in ``--out`` (one per init, setting, label fraction, seed and recipe tag),
merged into the file as each finishes; a row already there is not run again, so a benchmark
can be split into short jobs, side by side. A fine-tune keeps its state in
``<out's folder>/finetune_state/`` until its row is written: stopped (Ctrl-C, SIGTERM), the same
command continues it, and its row counts the minutes of every attempt.
``--set KEY=VALUE`` changes the recipe (a ``FinetuneSegOptions`` field) and ``--tag`` names it.
``--protocol probes`` fits the frozen probes (linear, k-NN) on the same subsets instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import torch
from omegaconf import OmegaConf

# run as a script: benchmarks/ is on sys.path
from probe_rows import probe_row, save_row

from densessl.eval.drift import conv_filters, drift_by_stage
from densessl.eval.finetune_seg import FinetuneSegOptions, finetune_seg
from densessl.eval.labels import Subset, label_subset
from densessl.eval.segmentation import open_segmentation
from densessl.eval.weights import load_backbone

RUN_NAME = re.compile(r"^(?P<method>[a-z0-9]+)_(?P<setting>[a-z]+)_s(?P<seed>\d+)$")


def describe_init(init: str) -> tuple[str, str, int | None]:
    """(method, setting, pretraining seed) of an init: ``random`` has neither."""
    if init == "random":
        return "random", "-", None
    match = RUN_NAME.match(Path(init).name)
    if match is None:
        raise SystemExit(f"{init}: name pretraining runs <method>_<setting>_s<seed>")
    return match["method"], match["setting"], int(match["seed"])


def row_key(init: str, labels: str, seed: int, tag: str) -> str:
    method, setting, _ = describe_init(init)
    return f"{method} {setting} labels={labels} seed={seed}" + (f" {tag}" if tag else "")


def pending_rows(args: argparse.Namespace, suffix: str = ""):
    """(init, labels, seed, row key) of every requested row not yet in ``args.out``; a
    pretraining run pairs with its own seed only. The file is re-read for each row, since
    another invocation may have added it meanwhile."""
    for labels in args.labels:
        for seed in args.seeds:
            for init in args.inits:
                pretrain_seed = describe_init(init)[2]
                if pretrain_seed is not None and pretrain_seed != seed:
                    continue
                key = row_key(init, labels, seed, args.tag) + suffix
                if not (args.out.exists() and key in json.loads(args.out.read_text())):
                    yield init, labels, seed, key


def options_of(sets: list[str], seed: int) -> FinetuneSegOptions:
    base = OmegaConf.structured(FinetuneSegOptions)
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(sets)) if sets else base
    return replace(OmegaConf.to_object(merged), seed=seed)


def finetune_fields(init: str, train, val, indices: list[int], args, seed: int) -> dict:
    """Fine-tune ``init`` on the subset and score it: the row's measured fields. The run keeps
    its state in ``args.state``, so a stopped benchmark continues it."""
    options = options_of(args.set, seed)
    backbone = load_backbone(init, "resnet18")
    initial = conv_filters(backbone)  # a copy, kept as it is while the segmenter trains
    result = finetune_seg(backbone, train, val, options, indices, args.state)
    moved = drift_by_stage(initial, conv_filters(result.model.encoder))
    return {
        "miou": round(result.scores.miou, 2),
        "pixel_accuracy": round(result.scores.pixel_accuracy, 2),
        "per_class_iou": {k: round(v, 2) for k, v in result.scores.per_class_iou.items()},
        "iterations": result.iterations, "final_loss": round(result.final_loss, 4),
        "options": asdict(options),
        # per ResNet stage: mean cosine of the encoder's conv weights to the init's
        "encoder_cosine": {stage: round(d.cosine, 4) for stage, d in moved.items()},
    }  # fmt: skip


def probe_fields(init: str, train, val, indices: list[int], args, seed: int) -> dict:
    """The frozen probes (linear and k-NN, C4 + C5 at 224 px, as benchmarks/camvid_transfer.py)
    fitted on the subset: the row's measured fields, ``miou`` the linear probe's."""
    row = probe_row(load_backbone(init, "resnet18"), Subset(train, indices), val, ["c4", "c5"],
                    224)  # fmt: skip
    return {"miou": round(row["linear"]["miou"], 2), "knn_miou": round(row["knn"]["miou"], 2),
            "linear": row["linear"], "knn": row["knn"]}  # fmt: skip


PROTOCOLS = {"finetune": finetune_fields, "probes": probe_fields}


def run(args: argparse.Namespace) -> None:
    split = Path(args.split) / "seg"
    train = open_segmentation(split, "camvid", "train")
    val = open_segmentation(split, "camvid", "val")
    suffix = "" if args.protocol == "finetune" else f" {args.protocol}"
    for init, labels, seed, key in pending_rows(args, suffix):
        indices = label_subset(len(train), labels, seed)
        started = time.perf_counter()
        state = args.out.parent / "finetune_state" / f"{key.replace(' ', '_')}.pt"
        spent = state.with_suffix(".minutes")  # the minutes of earlier, stopped attempts
        earlier = float(spent.read_text()) if spent.exists() and state.exists() else 0.0
        try:
            measured = PROTOCOLS[args.protocol](init, train, val, indices,
                                                argparse.Namespace(**vars(args), state=state),
                                                seed)  # fmt: skip
        except KeyboardInterrupt:
            spent.write_text(f"{earlier + (time.perf_counter() - started) / 60:.2f}\n")
            raise
        method, setting, _ = describe_init(init)
        row = {
            "init": init, "method": method, "setting": setting, "labels": labels,
            "seed": seed, "tag": args.tag, "set": args.set, "protocol": args.protocol,
            **measured, "train_images": len(indices),
            "minutes": round(earlier + (time.perf_counter() - started) / 60, 1),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        }  # fmt: skip
        save_row(args.out, key, row)
        state.unlink(missing_ok=True)
        spent.unlink(missing_ok=True)
        print(f"{key}: mIoU {row['miou']:.1f} ({row['minutes']} min)", flush=True)


def mean_and_spread(values: list[float], sign: str = "") -> str:
    """``mean ± sd`` over seeds; the mean alone for one seed, which has no spread."""
    mean = f"{statistics.fmean(values):{sign}.1f}"
    return f"{mean} ± {statistics.stdev(values):.1f}" if len(values) > 1 else mean


def summary(rows: dict, tag: str, protocol: str, metric: str) -> None:
    """Per (method, setting, labels): ``metric`` mean ± sd over seeds; margins to random init
    paired by seed."""
    groups: dict[tuple[str, str, str], dict[int, float]] = {}
    minutes: dict[tuple[str, str, str], list[float]] = {}
    for row in rows.values():
        if row.get("tag", "") != tag or row.get("protocol", "finetune") != protocol:
            continue
        key = (row["method"], row["setting"], row["labels"])
        groups.setdefault(key, {})[row["seed"]] = row[metric]
        minutes.setdefault(key, []).append(row["minutes"])
    print(f"| init | pretraining pool | labels | seeds | {metric} | - random (paired) | "
          "beyond 2 sd | min per run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(groups):
        method, setting, labels = key
        by_seed = groups[key]
        values = [by_seed[s] for s in sorted(by_seed)]
        margin, verdict = "", ""
        base = groups.get(("random", "-", labels))
        if base and method != "random":
            gaps = [by_seed[s] - base[s] for s in sorted(by_seed) if s in base]
            if gaps:
                margin = mean_and_spread(gaps, sign="+")
                beyond = len(gaps) > 1 and abs(statistics.fmean(gaps)) > 2 * statistics.stdev(gaps)
                verdict = "one seed" if len(gaps) == 1 else ("yes" if beyond else "no")
        print(f"| {method} | {setting} | {labels} | {', '.join(map(str, sorted(by_seed)))} | "
              f"{mean_and_spread(values)} | {margin} | {verdict} | "
              f"{statistics.fmean(minutes[key]):.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", help="camvid_heldout.py's output folder")
    parser.add_argument("--inits", nargs="+", default=["random"])
    parser.add_argument("--labels", nargs="+", default=["10%"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", action="append", default=[], help="recipe KEY=VALUE")
    parser.add_argument("--tag", default="", help="names the recipe variant")
    parser.add_argument("--out", type=Path, required=True, help="rows JSON (accumulates)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="finetune",
                        help="fine-tune the whole network, or fit the frozen probes")  # fmt: skip
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if args.summary:
        metrics = ["miou"] if args.protocol == "finetune" else ["miou", "knn_miou"]
        for metric in metrics:
            summary(json.loads(args.out.read_text()), args.tag, args.protocol, metric)
        return
    if not args.split:
        parser.error("--split is required to run")
    run(args)


if __name__ == "__main__":
    main()
