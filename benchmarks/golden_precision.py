"""How far another reduction order moves the golden record's tiny runs, in float32 and float64.

Each method's golden-record run (``tests/golden/record.py``) is trained twice, at 2 threads and
at 1 (other kernels split the sums differently, as another CPU does), and the largest relative
difference over its 10 losses and over its final state's checksums is printed::

    python benchmarks/golden_precision.py --precision fp32 fp64 --methods densecl soco
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "golden"))
import record  # tests/golden/record.py: the tiny runs


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


def moved(name: str) -> tuple[float, float]:
    """(largest relative loss difference, largest relative checksum difference), 2 vs 1 thread."""
    runs = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(record.run_method(name, Path(tmp) / name))
    a, b = runs
    losses = max(relative(x, y) for x, y in zip(a["losses"], b["losses"], strict=True))
    state = max(relative(a[key], b[key]) for key in ("sum", "abs_sum", "sq_sum"))
    return losses, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["fp32", "fp64"])
    parser.add_argument("--methods", nargs="+", default=list(record.RUNS))
    args = parser.parse_args()
    for precision in args.precision:
        record._COMMON["precision"] = precision
        for name in args.methods:
            losses, state = moved(name)
            print(f"{precision} {name}: losses {losses:.1e}, state {state:.1e}", flush=True)


if __name__ == "__main__":
    main()
