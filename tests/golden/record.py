"""The golden record: fixed-seed CPU runs of every registered method, in float64, pinned to 1e-6.

Each method pretrains for ``STEPS`` optimizer steps on the built-in scenes at tiny sizes through
the public entry point (``build_config`` + ``train``), with ``precision: fp64`` (weights, views
and losses in float64). The record keeps every step's loss and a checksum of the final state
(sum, absolute sum and sum of squares over every floating tensor of the method's state dict, so
renaming a module does not change it, but changing a value does).

One record for every machine. In float32 the same code rounds differently on an Intel Xeon and
an AMD EPYC, or with another thread count (other kernels, other summation orders), and ten
tiny-batch steps amplify that past 1e-3; in float64 the same differences stay far below the
1e-6 tolerance (BENCHMARKS.md, "The golden record in float64"), while a change of 1e-5 still
fails. A change that alters training results on purpose regenerates the record, in its own
commit that says why::

    python tests/golden/record.py --write               # every method
    python tests/golden/record.py --write NAME ...      # these methods only (a new one)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from densessl.config import build_config
from densessl.engine.train import train
from densessl.methods import get_method
from densessl.registry import METHODS
from densessl.runs import load_checkpoint

# {"about": ..., "runs": {method: tiny-run overrides}, "results": {method: results}}
RECORD = Path(__file__).with_name("record.json")
STEPS = 10

_CNN = {
    "backbone": "resnet18",
    "batch_size": 4,
    "data.image_size": 64,
    "data.synthetic_images": 8,
    "data.synthetic_size": 80,
}
_VIT = {
    "backbone": "vit_test_patch8",
    "batch_size": 4,
    "data.image_size": 48,
    "data.synthetic_images": 8,
    "data.synthetic_size": 64,
}
# Tiny widths and crops, set on every method whose config has the field.
_TINY_FIELDS = {
    "queue_size": 16,
    "dim": 16,
    "hidden_dim": 32,
    "fpn_channels": 16,
    "head_channels": 16,
    "head_fc_dim": 32,
    "patch_out_dim": 32,
    "local_crops": 2,
    "local_crop_size": 24,
    "out_dim": 64,
    "bottleneck_dim": 16,
}
_COMMON = {"steps": STEPS, "seed": 0, "device": "cpu", "precision": "fp64", "data.workers": 0,
           "log_every": 1, "checkpoint_every": 1000}  # fmt: skip


def tiny_run(name: str) -> dict:
    """A new method's tiny run, from its class alone: the tiny ResNet-18 or ViT setting of its
    default backbone, and :data:`_TINY_FIELDS` where its config has them."""
    method = get_method(name)
    fields = {f.name for f in dataclasses.fields(method.Config)}
    run = dict(_VIT if method.run_defaults.backbone.startswith("vit") else _CNN)
    return {**run, **{f"method.{k}": v for k, v in _TINY_FIELDS.items() if k in fields}}


def recorded_runs() -> dict[str, dict]:
    """Every registered method's tiny run: as recorded (the record keeps the overrides each entry
    was made with), else :func:`tiny_run`."""
    import densessl.methods  # noqa: F401  (registers them)

    recorded = json.loads(RECORD.read_text()).get("runs", {}) if RECORD.exists() else {}
    return {name: recorded.get(name) or tiny_run(name) for name in METHODS.names()}


RUNS = recorded_runs()


def run_method(name: str, out: Path) -> dict:
    """Train ``name`` for STEPS steps; return its per-step losses and final-state checksum."""
    overrides = {**RUNS[name], **_COMMON, "out": str(out)}
    if get_method(name).run_defaults.optim.warmup_epochs:  # a warm-up, short enough to end
        overrides.setdefault("optim.warmup_steps", 3)
    cfg = build_config(get_method(name), overrides=[f"{k}={v}" for k, v in overrides.items()])
    train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    floats = [t.double() for t in state.values() if t.is_floating_point()]
    return {
        "losses": [r["loss"] for r in records],
        "sum": sum(float(t.sum()) for t in floats),
        "abs_sum": sum(float(t.abs().sum()) for t in floats),
        "sq_sum": sum(float((t * t).sum()) for t in floats),
        "numel": sum(t.numel() for t in floats),
    }


def run_all(names=None) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or RUNS:
            out[name] = run_method(name, Path(tmp) / name)
    return out


def read_results() -> dict[str, dict]:
    """method -> recorded run."""
    return json.loads(RECORD.read_text())["results"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="methods to run (default: every one)")
    parser.add_argument("--write", action="store_true", help="write them into the record")
    args = parser.parse_args(argv)
    runs = run_all(args.names or None)
    if args.write:
        kept = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        results = {**kept.get("results", {}), **runs}
        record = {"about": kept.get("about", ""), "runs": RUNS, "results": results}
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    sys.stdout.write(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
