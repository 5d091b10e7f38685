"""The golden record: fixed-seed CPU runs of every registered method, pinned to 1e-6.

Each method pretrains for ``STEPS`` optimizer steps on the built-in scenes at tiny sizes through
the public entry point (``build_config`` + ``train``). The record keeps every step's loss and a
checksum of the final state (sum, absolute sum and sum of squares over every floating tensor of
the method's state dict, so renaming a module does not change it, but changing a value does).

One record per CPU vendor. The same code rounds differently on an Intel Xeon and an AMD EPYC
(their math libraries pick other kernels, so other summation orders), and ten tiny-batch steps
amplify that: MoCo-v2's step-0 loss differs by 2e-7 between the two, its step-8 loss by 4e-3;
DenseCL's argmax matching turns it into 3e-4 by step 3. A run must match the record of some
machine to 1e-6. A change that alters training results on purpose regenerates the record, in
its own commit that says why, on every machine it can reach::

    python tests/golden/record.py --write            # this machine's entry; keeps the others
    python tests/golden/record.py --write --only     # this machine's entry alone (a new baseline)

An entry that a change could not regenerate then fails on its machine until a session there
writes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from densessl.config import build_config
from densessl.engine.train import train
from densessl.methods import get_method
from densessl.registry import METHODS
from densessl.runs import load_checkpoint

# {"about": ..., "runs": {method: tiny-run overrides}, "machines": {machine: {method: results}}}
RECORD = Path(__file__).with_name("record.json")
STEPS = 10
THREADS = 2

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
_COMMON = {"steps": STEPS, "seed": 0, "device": "cpu", "data.workers": 0, "log_every": 1,
           "checkpoint_every": 1000}  # fmt: skip


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
    # CPU reductions split by thread: the record holds for 2 threads (CI's) only.
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(name, out)
    finally:
        torch.set_num_threads(threads)


def _run(name: str, out: Path) -> dict:
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


def this_machine() -> str:
    """The CPU vendor, e.g. ``"GenuineIntel"`` or ``"AuthenticAMD"`` (Linux), else what
    :func:`platform.processor` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def read_records() -> dict[str, dict]:
    """machine -> {method -> recorded run}."""
    return json.loads(RECORD.read_text())["machines"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write this machine's entry")
    parser.add_argument("--only", action="store_true", help="drop the other machines' entries")
    args = parser.parse_args(argv)
    runs = run_all()
    kept = json.loads(RECORD.read_text()) if RECORD.exists() and not args.only else {}
    machines = {**kept.get("machines", {}), this_machine(): runs}
    # "about": where and from which code each entry was written (edit this machine's by hand)
    about = {name: kept.get("about", {}).get(name, "") for name in machines}
    if args.write:
        record = {"about": about, "runs": RUNS, "machines": machines}
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    sys.stdout.write(json.dumps({this_machine(): runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
