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
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from densessl.config import build_config
from densessl.engine.train import train
from densessl.methods import get_method
from densessl.runs import load_checkpoint

RECORD = Path(__file__).with_name("record.json")  # {"about": ..., "machines": {machine: runs}}
STEPS = 10
THREADS = 2

_CNN = {
    "backbone": "resnet18",
    "batch_size": 4,
    "data.image_size": 64,
    "data.synthetic_images": 8,
    "data.synthetic_size": 80,
}
_FPN = {**_CNN, "method.dim": 16, "method.hidden_dim": 32, "method.fpn_channels": 16,
        "method.head_channels": 16}  # fmt: skip
_VIT = {
    "backbone": "vit_test_patch8",
    "batch_size": 4,
    "data.image_size": 48,
    "data.synthetic_images": 8,
    "data.synthetic_size": 64,
    "method.local_crops": 2,
    "method.local_crop_size": 24,
    "method.out_dim": 64,
    "method.hidden_dim": 32,
    "method.bottleneck_dim": 16,
}
# Each method's tiny run. Epochs are a couple of steps long, so epoch-based schedules (warm-up,
# DINO's teacher temperature and last-layer freeze) all change inside the 10 steps.
RUNS: dict[str, dict] = {
    "mocov2": {**_CNN, "method.queue_size": 16, "method.dim": 16, "method.hidden_dim": 32},
    "densecl": {**_CNN, "method.queue_size": 16, "method.dim": 16, "method.hidden_dim": 32},
    "byol": {**_CNN, "method.dim": 16, "method.hidden_dim": 32},
    "soco": {**_FPN, "method.head_fc_dim": 32},
    "mcl": _FPN,
    "dino": {**_VIT, "method.warmup_teacher_temp_epochs": 2, "method.freeze_last_layer_epochs": 1},
    "selfpatch": {**_VIT, "method.patch_out_dim": 32},
}
_COMMON = {"steps": STEPS, "seed": 0, "device": "cpu", "data.workers": 0, "log_every": 1,
           "checkpoint_every": 1000}  # fmt: skip


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
    if name in ("byol", "soco", "mcl", "dino", "selfpatch"):  # warm-up inside the run
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
        RECORD.write_text(json.dumps({"about": about, "machines": machines}, indent=1) + "\n")
    sys.stdout.write(json.dumps({this_machine(): runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
