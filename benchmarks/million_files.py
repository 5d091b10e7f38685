"""How long a run takes to start on a folder of a million images, before and after the cached
listing.

The tree is ``--folders`` folders of ``--per-folder`` tiny PNGs (hard links to one file per
folder, so a million files cost a few MB); it is generated once under ``--root``. Each row runs
in a fresh interpreter, ``--repeats`` times, with the page cache warm (a run that starts
usually follows one that listed the same tree), and gives the median:

- ``listing``: opening the folder as a data source (``ImageFolder``), the part that grows
  with the file count; ``pretrain --steps 1``: the whole command, tiny model;
- ``before``: ``--before-src``, another checkout's ``src`` (the code without the cache);
- ``first run``: this code with an empty cache (walks the tree and saves the listing);
- ``cached``: this code again (reads the listing, checks the folders' times).

    python benchmarks/million_files.py --root /tmp/million --before-src /path/to/old/src
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
OPEN = "import sys; from densessl.data.sources import ImageFolder; ImageFolder(sys.argv[1])"


def make_tree(root: Path, folders: int, per_folder: int) -> Path:
    from PIL import Image

    tree = root / f"tree_{folders}x{per_folder}"
    done = tree / ".complete"
    if done.exists():
        return tree
    for f in range(folders):
        folder = tree / f"{f:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        first = folder / "img_000000.png"
        Image.new("RGB", (8, 8), (f % 256, 30, 200)).save(first)
        for i in range(1, per_folder):
            path = folder / f"img_{i:06d}.png"
            if not path.exists():
                os.link(first, path)
    past = time.time() - 3600  # a tree nobody is writing to
    for folder, _, _ in os.walk(tree):
        os.utime(folder, (past, past))
    done.write_text("")
    os.utime(tree, (past, past))
    return tree


def seconds(args: list[str], src: str, cache: str) -> float:
    env = {**os.environ, "PYTHONPATH": src, "DENSESSL_CACHE_DIR": cache, "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="where the tree is generated (kept)")
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--per-folder", type=int, default=1000)
    parser.add_argument("--before-src", required=True, help="src of the code without the cache")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tree = make_tree(Path(args.root), args.folders, args.per_folder)
    files = args.folders * args.per_folder
    with tempfile.TemporaryDirectory() as tmp:
        cache, run = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
        pretrain = ["-m", "densessl.cli", "pretrain", "--method", "mocov2", "--data", str(tree),
                    "--out", run, "--steps", "1", "backbone=resnet18", "batch_size=4",
                    "data.image_size=32", "data.workers=0"]  # fmt: skip
        rows: dict[str, list[float]] = {}

        def time_row(name: str, command: list[str], src: str, fresh_cache: bool) -> None:
            for _ in range(args.repeats):
                if fresh_cache:
                    shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(run, ignore_errors=True)
                rows.setdefault(name, []).append(seconds(command, src, cache))

        for label, command in (("listing", ["-c", OPEN, str(tree)]), ("pretrain", pretrain)):
            time_row(f"{label}, before", command, args.before_src, True)
            time_row(f"{label}, first run", command, SRC, True)
            shutil.rmtree(run, ignore_errors=True)
            seconds(command, SRC, cache)  # save the listing for the cached row
            time_row(f"{label}, cached", command, SRC, False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"tree: {files} files in {args.folders} folders; median of {args.repeats}")
    for name, times in rows.items():
        before = statistics.median(rows[name.split(",")[0] + ", before"])
        median = statistics.median(times)
        print(f"{name:22s} {median:7.2f} s   {before / median:5.1f}x faster than before")


if __name__ == "__main__":
    main()
