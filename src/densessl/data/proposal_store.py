"""Proposals of a whole dataset: a resumable parallel job, a pickle-free file, a cache.

:func:`generate_proposals` searches every image in a process pool, appending one JSON line per
image to ``<out>.partial.jsonl`` (a re-run continues from it; a torn last line is cut off), then
writes the ``.npz`` atomically and deletes the records. The ``.npz`` (``allow_pickle=False``):

========== ============== ===========================================================
keys       (N,) str       image keys: path relative to the folder (or the source's name)
offsets    (N + 1,) int64 boxes of image ``i`` are ``boxes[offsets[i]:offsets[i + 1]]``
boxes      (B, 4) float32 filtered xyxy boxes in the original image's pixels
sizes      (N, 2) int32   (H, W) of each image
skipped    (S,) str       keys of files that could not be decoded (never searched again)
meta       () str         JSON: format version, source fingerprint and count, search settings
========== ============== ===========================================================
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densessl import dist
from densessl.data.proposals import (
    ROUTES,
    SEARCH_MAX_SIDE,
    SEARCH_ROUTE,
    check_route,
    image_proposals,
)
from densessl.data.sources import ImageFolder, ImageSource, UnreadableImage
from densessl.errors import DataError
from densessl.progress import progress as show_progress

FORMAT = "densessl-proposals"
VERSION = 1
FOLDER_CACHE_NAME = ".densessl_proposals.npz"  # hidden, so image listings never see it


@dataclass
class GenerationResult:
    """What :func:`generate_proposals` did.

    Attributes:
        path: the final file (only written when ``complete``).
        computed: images searched in this call.
        reused: images already done before this call (records or a finished file).
        skipped: images that could not be decoded, in total.
    """

    path: Path
    complete: bool
    computed: int
    reused: int
    skipped: int


def source_keys(source: ImageSource) -> list[str]:
    """One stable name per image: the source's ``key(i)`` (a folder's relative path, a shard's
    member name), else ``describe(i)``."""
    name = getattr(source, "key", source.describe)
    return [name(i) for i in range(len(source))]


def source_fingerprint(source: ImageSource, keys: list[str]) -> str:
    """A digest of the image names, plus seed and size for sources that render their images."""
    tag = type(source).__name__
    for attribute in ("seed", "image_size"):
        if hasattr(source, attribute):
            tag += f" {attribute}={getattr(source, attribute)}"
    digest = hashlib.sha256(tag.encode())
    for key in keys:
        digest.update(b"\n" + key.encode())
    return digest.hexdigest()[:16]


# ---- worker side: the source lives in a module global, sent once per process ----------------

_WORKER: dict[str, Any] = {}


def _init_worker(source: ImageSource, max_side: int | None, route: str) -> None:
    _WORKER.update(source=source, max_side=max_side, route=route)


def _search_one(index: int) -> tuple[int, dict[str, Any]]:
    source = _WORKER["source"]
    try:
        image = source.load_image(index)
    except UnreadableImage as error:
        return index, {"skipped": error.reason}
    boxes = image_proposals(image, _WORKER["max_side"], _WORKER["route"])
    return index, {"size": [image.height, image.width], "boxes": boxes.tolist()}


# ---- record file ------------------------------------------------------------------------------


def _records_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _read_records(path: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Finished images of an earlier run, after cutting off a line torn by a kill."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    lines = data[:end].decode().splitlines()
    found = json.loads(lines[0]) if lines else None
    if found != header:
        raise DataError(
            f"{path} holds an unfinished run for other images or settings; delete it to start "
            "afresh, or pass the --data it was made for"
        )
    records = (json.loads(line) for line in lines[1:])
    return {record.pop("index"): record for record in records}


def _write_final(out: Path, keys: list[str], records: dict[int, dict], meta: dict) -> None:
    done = [i for i in range(len(keys)) if "boxes" in records[i]]
    per_image = [np.asarray(records[i]["boxes"], dtype=np.float32).reshape(-1, 4) for i in done]
    offsets = np.zeros(len(done) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in per_image])
    arrays = {
        "keys": np.array([keys[i] for i in done], dtype=str),
        "offsets": offsets,
        "boxes": np.concatenate(per_image) if per_image else np.zeros((0, 4), np.float32),
        "sizes": np.array([records[i]["size"] for i in done], dtype=np.int32).reshape(-1, 2),
        "skipped": np.array([keys[i] for i in records if "skipped" in records[i]], dtype=str),
        "meta": np.array(json.dumps(meta)),
    }
    temporary = out.with_name(out.name + ".tmp")
    with open(temporary, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, out)  # atomic: readers see the old file or the whole new one


# ---- public entry points ----------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {name: file[name] for name in file.files}
        meta = json.loads(str(arrays["meta"]))
    except Exception as error:
        raise DataError(f"{path} is not a readable proposals file ({error})") from error
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a densessl proposals file")
    arrays["meta"] = meta
    return arrays


def _check_belongs(path: Path, meta: dict, source: ImageSource, keys: list[str]) -> None:
    if meta["fingerprint"] == source_fingerprint(source, keys):
        return
    where = getattr(source, "root", type(source).__name__)
    raise DataError(
        f"{path} was made for {meta['count']} images that are not the {len(keys)} of {where} "
        f"(names or count differ); regenerate: densessl proposals --data {where} --out {path}"
    )


def load_proposals(path: str | Path, source: ImageSource | None = None) -> dict[str, np.ndarray]:
    """Read a proposals file (no pickle): image key (relative path) -> (K, 4) float32 xyxy boxes,
    undecodable files absent. DataError if unreadable or, ``source`` given, not made for exactly
    its images."""
    path = Path(path)
    arrays = _read_npz(path)
    if source is not None:
        _check_belongs(path, arrays["meta"], source, source_keys(source))
    offsets, boxes = arrays["offsets"], arrays["boxes"]
    return {str(key): boxes[offsets[i] : offsets[i + 1]] for i, key in enumerate(arrays["keys"])}


def generate_proposals(
    source: ImageSource,
    out: str | Path,
    workers: int | None = None,
    max_side: int | None = SEARCH_MAX_SIDE,
    max_images: int | None = None,
    progress: bool = True,
    route: str = SEARCH_ROUTE,
) -> GenerationResult:
    """Selective search + SoCo filter on every image of ``source``, resumable, into ``out``.

    Args:
        source: images (an :class:`ImageFolder`, the synthetic scenes, ...); must pickle.
        workers: processes (default: all cores); 1 runs in this process.
        max_images: stop after searching this many images, leaving the run unfinished.

    DataError if ``out`` or its record file belongs to other images or settings; ConfigError for
    an unknown ``route``.
    """
    check_route(route)
    out = Path(out)
    keys = source_keys(source)
    header = {
        "format": FORMAT, "version": VERSION, "fingerprint": source_fingerprint(source, keys),
        "count": len(keys), "max_side": max_side, "search": ROUTES[route],
    }  # fmt: skip
    if out.exists():
        arrays = _read_npz(out)
        _check_belongs(out, arrays["meta"], source, keys)
        return GenerationResult(out, True, 0, len(keys), len(arrays["skipped"]))
    records_path = _records_path(out)
    records = _read_records(records_path, header) if records_path.exists() else {}
    reused = len(records)
    todo = [i for i in range(len(keys)) if i not in records]
    if max_images is not None:
        todo = todo[:max_images]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = show_progress(total=len(keys), initial=reused, unit="img", desc="proposals",
                        enabled=progress)  # fmt: skip
    try:
        with open(records_path, "a") as log:
            if not reused:
                log.write(json.dumps(header) + "\n")
            for index, record in _run(source, todo, workers, max_side, route):
                # One flushed line per image: a kill loses at most the images in flight.
                log.write(json.dumps({"index": index, **record}) + "\n")
                log.flush()
                records[index] = record
                bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(records)}/{len(keys)} images are saved in {records_path}; "
              "run the same command again to continue", file=sys.stderr)  # fmt: skip
        raise
    finally:
        bar.close()
    skipped = sum("skipped" in r for r in records.values())
    if len(records) < len(keys):
        return GenerationResult(out, False, len(todo), reused, skipped)
    _write_final(out, keys, records, header)
    records_path.unlink()
    return GenerationResult(out, True, len(todo), reused, skipped)


def _run(source: ImageSource, todo: list[int], workers: int, max_side: int | None, route: str):
    """Yield ``(index, record)`` as images finish, in this process or a pool."""
    if workers == 1:
        _init_worker(source, max_side, route)
        yield from map(_search_one, todo)
        return
    # spawn, not fork: the caller may hold torch threads, which a forked child must not inherit.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (source, max_side, route)) as pool:
        yield from pool.imap_unordered(_search_one, todo)


def proposals_for_source(
    source: ImageSource, run_dir: str | Path, workers: int | None = None, progress: bool = True
) -> list[np.ndarray]:
    """Per-image proposals for pretraining, generated when missing and cached beside a folder
    (``.densessl_proposals.npz``), else in ``run_dir``; regenerated if made for other images. A
    list aligned with the source's indices of (K, 4) float32 xyxy boxes in original-image pixels,
    K >= 1; (0, 4) only for files that could not be decoded."""
    run_dir = Path(run_dir)
    keys = source_keys(source)
    if isinstance(source, ImageFolder):
        beside = Path(source.root) / FOLDER_CACHE_NAME
        candidates = [beside, run_dir / "proposals.npz"]
        target = beside if os.access(source.root, os.W_OK) else candidates[1]
    else:
        candidates = [run_dir / f"proposals_{source_fingerprint(source, keys)}.npz"]
        target = candidates[0]
    for path in candidates:
        if path.exists():
            try:
                found = load_proposals(path, source)
                break
            except DataError:
                if path == target:
                    path.unlink()  # our own stale cache: the images changed
    else:
        generate_proposals(source, target, workers=workers, progress=progress)
        found = load_proposals(target, source)
    empty = np.zeros((0, 4), dtype=np.float32)
    return [found.get(key, empty) for key in keys]


class ProposalList:
    """``lookup(i)`` -> (M, 4) xyxy source-pixel proposals of image ``i``, from a list aligned
    with the source (picklable, for data workers)."""

    def __init__(self, boxes: list) -> None:
        self.boxes = boxes

    def __call__(self, i: int):
        return self.boxes[i]


def proposal_lookup(source: ImageSource, run_dir: str | Path, workers: int) -> ProposalList:
    """SoCo's proposals of every image (:func:`proposals_for_source`): the main process generates
    them while the others wait, then every process loads the file."""
    workers = max(1, workers)
    if dist.is_main():
        boxes = proposals_for_source(source, run_dir, workers=workers, progress=True)
    dist.barrier()
    if not dist.is_main():
        boxes = proposals_for_source(source, run_dir, workers=workers, progress=False)
    return ProposalList(boxes)
