"""Write a folder of images as tar shards (``densessl data shards``), with WebDataset's writer.

Each image becomes one sample: key = its path relative to the folder without the extension,
dots turned into ``_`` (a key ends at the first dot of a file name) and a ``_2``, ``_3``...
where two paths would meet; one member ``key.ext`` holding the file's bytes unchanged (no
decode, no re-encode: a broken file stays broken and is skipped and counted when read, as in a
folder). Shards hold ``shard_size`` images each, in the folder's sorted order, named
``shard-000000.tar`` on. They are written into a hidden sibling folder renamed to ``out`` at the
end, so an interrupted or refused write leaves no half set of shards behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from densessl.data.sources import ImageFolder, UnreadableImage, require_regular_file
from densessl.errors import ConfigError, OutputError
from densessl.progress import progress

SHARD_NAME = "shard-%06d.tar"


@dataclass
class ShardsWritten:
    out: Path
    images: int
    shards: int
    unreadable: list[str]

    @property
    def pattern(self) -> str:
        """The brace pattern naming every shard written, for ``--data``."""
        return str(self.out / SHARD_NAME.replace("%06d", f"{{000000..{self.shards - 1:06d}}}"))


def sample_keys(names: list[str]) -> list[str]:
    """WebDataset keys of relative image paths (rule in the module docstring)."""
    keys, used = [], set()
    for name in names:
        folder, file = posixpath.split(posixpath.splitext(name)[0])
        base = posixpath.join(folder, file.replace(".", "_"))
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        keys.append(key)
    return keys


def _refuse(out: Path, shard_size: int) -> None:
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: give a positive number of images per shard")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out} exists and is not an empty folder; choose a new --out folder")


def write_shards(folder: str | Path, out: str | Path, shard_size: int = 1000) -> ShardsWritten:
    """Write the images under ``folder`` as tar shards in ``out`` (a new or empty folder)."""
    import webdataset

    out = Path(out)
    _refuse(out, shard_size)
    source = ImageFolder(folder)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a write that was killed
    partial.mkdir(parents=True)
    unreadable, written = [], 0
    try:
        pattern = str(partial / SHARD_NAME)
        with webdataset.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
            for i, key in enumerate(progress(sample_keys(source.names), "shards", unit="img")):
                try:
                    require_regular_file(source.path(i))  # a pipe would block the read
                    data = Path(source.path(i)).read_bytes()
                except (OSError, UnreadableImage) as error:
                    unreadable.append(str(error))
                    continue
                extension = os.path.splitext(source.names[i])[1].lstrip(".").lower()
                sink.write({"__key__": key, extension: data})
                written += 1
            shards = sink.shard
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ShardsWritten(out, written, shards, unreadable)
