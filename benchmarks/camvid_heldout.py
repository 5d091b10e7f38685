"""CamVid split by drive: one whole sequence held out for scoring, the others for labels.

CamVid's file names start with their sequence (``0001TP_006690.png``). SegNet's ``val`` split is
all 0016E5, a drive that also gives 204 training frames, so it scores near-duplicates of the
training images. This script holds one sequence out (``--heldout``, 0006R0 by default) and
writes, as symbolic links into ``--out`` (no copy of the data):

- ``seg/train`` + ``seg/trainannot``: every labelled frame of the other sequences (SegNet's
  train and val together), the frames fine-tuning and the probes learn from;
- ``seg/val`` + ``seg/valannot``: the held-out sequence, the frames every score is computed on;
- ``pool_new``: the pretraining images of setting (i), new scenes: the other sequences only;
- ``pool_all``: the pretraining images of setting (ii): every frame, the held-out sequence
  included (unlabelled), as a user who pretrains on all their footage.

``--subsets NAME=COUNT[:SEQUENCE]`` adds ``pool_NAME``: COUNT frames (a number, or a percentage
of ``pool_new``) evenly spaced in name order, from one SEQUENCE if given; the pools that measure
what the number and the diversity of the pretraining images do on new scenes.

    python benchmarks/camvid_heldout.py --data ../shared/data/camvid --out runs/camvid_heldout
    python benchmarks/camvid_heldout.py --data ../shared/data/camvid --out runs/camvid_heldout \
        --subsets quarter=25% half=50% onedrive=50%:0016E5
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def sequence_of(image: Path) -> str:
    """The drive a CamVid frame comes from: its file name up to the first underscore."""
    return image.name.split("_", 1)[0]


def labelled_frames(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) of every split ``S`` that has ``S/`` and ``Sannot/``, sorted by name."""
    pairs = []
    for image_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label_dir = root / f"{image_dir.name}annot"
        if not label_dir.is_dir():
            continue
        for image in sorted(image_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES and (label_dir / image.name).is_file():
                pairs.append((image, label_dir / image.name))
    return sorted(pairs, key=lambda pair: pair[0].name)


def split_by_sequence(root: Path, heldout: str) -> dict[str, list[tuple[Path, Path]]]:
    """``{"train": [...], "val": [...]}``: ``val`` is every frame of ``heldout``."""
    frames = labelled_frames(root)
    sequences = Counter(sequence_of(image) for image, _ in frames)
    if heldout not in sequences:
        raise SystemExit(f"no frame of sequence {heldout} in {root}; found {dict(sequences)}")
    return {
        "train": [pair for pair in frames if sequence_of(pair[0]) != heldout],
        "val": [pair for pair in frames if sequence_of(pair[0]) == heldout],
    }


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == target.resolve():
        return  # a second run leaves a split in use untouched
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def write_split(root: Path, out: Path, heldout: str) -> dict[str, int]:
    """Write the four folders of the module docstring; returns their image counts."""
    split = split_by_sequence(Path(root), heldout)
    for name, pairs in split.items():
        for image, label in pairs:
            _link(image, out / "seg" / name / image.name)
            _link(label, out / "seg" / f"{name}annot" / image.name)
            _link(image, out / "pool_all" / image.name)
            if name == "train":
                _link(image, out / "pool_new" / image.name)
    return {
        "seg/train": len(split["train"]),
        "seg/val": len(split["val"]),
        "pool_new": len(split["train"]),
        "pool_all": len(split["train"]) + len(split["val"]),
    }


def evenly_spaced(items: list, count: int) -> list:
    """``count`` of ``items`` at the centres of ``count`` equal stretches: indices
    ⌊(2i + 1)·n / 2·count⌋, i < count, all distinct since count ≤ n."""
    if not 0 < count <= len(items):
        raise SystemExit(f"a subset of {count} frames from {len(items)}: ask for 1 to {len(items)}")
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


def write_subset(out: Path, name: str, count: str, sequence: str | None = None) -> int:
    """``out/pool_<name>``: links to ``count`` (``"92"``, or ``"25%"`` of ``out/pool_new``,
    rounded half up) evenly spaced frames of ``out/pool_new``, of ``sequence`` only if given;
    returns the number of frames."""
    frames = sorted((out / "pool_new").iterdir(), key=lambda path: path.name)
    number = int(len(frames) * int(count[:-1]) / 100 + 0.5) if count.endswith("%") else int(count)
    if sequence is not None:
        frames = [frame for frame in frames if sequence_of(frame) == sequence]
    for frame in evenly_spaced(frames, number):
        _link(frame, out / f"pool_{name}" / frame.name)
    return number


def parse_subset(spec: str) -> tuple[str, str, str | None]:
    """``NAME=COUNT[:SEQUENCE]`` → (name, count, sequence or None); COUNT is N or N%."""
    name, _, rest = spec.partition("=")
    count, _, sequence = rest.partition(":")
    if not (name.isalpha() and name.islower() and count.removesuffix("%").isdigit()):
        raise SystemExit(f"--subsets {spec}: write NAME=COUNT[:SEQUENCE], NAME in small letters")
    return name, count, sequence or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="CamVid folder (SegNet layout)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the links")
    parser.add_argument("--heldout", default="0006R0", help="sequence scored on (default 0006R0)")
    parser.add_argument("--subsets", nargs="*", default=[], help="NAME=COUNT[:SEQUENCE] pools")
    args = parser.parse_args()
    counts = write_split(args.data, args.out, args.heldout)
    for name, count, sequence in map(parse_subset, args.subsets):
        counts[f"pool_{name}"] = write_subset(args.out, name, count, sequence)
    print(", ".join(f"{name}: {count}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
