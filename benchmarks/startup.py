"""How long the command line takes to answer when it has nothing to train: help, the version,
a mistake, the list, against ``import torch`` measured in the same run.

Each command runs ``--repeats`` times in a fresh interpreter; the table gives the median wall
time and its ratio to ``import torch``. ``--src`` points at another checkout's ``src`` to time
an older version the same way (it goes first on ``PYTHONPATH``).

    python benchmarks/startup.py --repeats 7
    python benchmarks/startup.py --repeats 7 --src /path/to/old/checkout/src
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "densessl --help": ["-m", "densessl.cli", "--help"],
    "densessl pretrain --help": ["-m", "densessl.cli", "pretrain", "--help"],
    "densessl pretrain (refused: no method)": ["-m", "densessl.cli", "pretrain"],
    "densessl pretrain --method densecl --steps 0 (refused)": [
        "-m",
        "densessl.cli",
        "pretrain",
        "--method",
        "densecl",
        "--steps",
        "0",
    ],
    "densessl list (imports every registry)": ["-m", "densessl.cli", "list"],
}


def seconds(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", help="another checkout's src folder to time instead")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.src, env.get("PYTHONPATH")]))
    medians = {}
    for name, command in COMMANDS.items():
        seconds(command, env)  # warm the file cache
        medians[name] = statistics.median(seconds(command, env) for _ in range(args.repeats))
    torch_time = medians["python -c 'import torch'"]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, median of "
          f"{args.repeats}{', src ' + args.src if args.src else ''}")  # fmt: skip
    print("| command | seconds | / import torch |\n|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} | {value / torch_time:.2f} |")


if __name__ == "__main__":
    main()
