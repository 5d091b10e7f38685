"""Tar shards in the WebDataset layout as an image source, read by index.

A shard is an uncompressed tar whose members form samples by key, WebDataset's rule
(``webdataset.tariterators.base_plus_ext``): member ``dir/name.ext`` belongs to sample
``dir/name``, the key ending at the first dot of the file name. A sample's image is its first
member whose last extension is an image type; samples without one are left out.

Images are read by index, as WebDataset's indexed form (wids) does, rather than streamed: each
image is a byte range of its shard, known from the shard's member table (read with Python's
``tarfile``, headers only). So the sampler, each rank's share and the exact resume are the
folder source's, and a sample's key names it for SoCo's proposals. The tables are saved
(:mod:`densessl.data.index_cache`) against each shard's size and modification time, and
tables missing from the cache are read in parallel threads (network file systems answer many
requests at once better than one after the other). Shards are files: local, NFS, Lustre or a
mounted bucket; compressed tars cannot be read by index.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from densessl.data import index_cache
from densessl.data.folder_index import IMAGE_EXTENSIONS
from densessl.data.sources import UnreadableImage, decode_rgb
from densessl.errors import DataError, UnreadableImageWarning

TABLE_THREADS = 16
_IMAGE_TYPES = tuple(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)


def _sample_key(name: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(name)


def read_member_table(shard: str) -> list[list]:
    """``[[member name, data offset, size], ...]`` of each sample's image in ``shard``, in tar
    order. A tar cut short keeps the members before the cut (the cut one fails when read);
    a file that is no tar raises ``tarfile.ReadError``."""
    table: list[list] = []
    sample, has_image = None, False
    with tarfile.open(shard, "r:") as tar:
        try:
            for info in tar:
                key, extensions = _sample_key(info.name) if info.isfile() else (None, None)
                if key is None:
                    continue
                if key != sample:
                    sample, has_image = key, False
                if not has_image and extensions.rsplit(".", 1)[-1].lower() in _IMAGE_TYPES:
                    table.append([info.name, info.offset_data, info.size])
                    has_image = True
        except tarfile.ReadError:  # data cut short after the last whole header
            if not table:
                raise
    return table


def _stamp(path: str) -> list[int]:
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def member_table(shard: str, cache: bool = True) -> list[list]:
    """:func:`read_member_table` of ``shard``, from the cache while the shard's size and
    modification time are those it was read at."""
    real = os.path.realpath(shard)
    stamp = _stamp(real)
    if cache:
        saved = index_cache.read_listing("shard", real)
        if saved is not None and saved.get("stamp") == stamp:
            return saved["table"]
    table = read_member_table(real)
    if cache:
        index_cache.write_listing("shard", real, {"stamp": stamp, "table": table})
    return table


class TarShards:
    """The images of a list of tar shards, in shard order then tar order.

    ``key(i)`` is the member name (prefixed by the shard's file name where several shards hold
    the same name). A shard that is no tar is skipped with a warning.

    Raises:
        DataError: no images in any shard.
    """

    def __init__(self, shards: list[str | Path], cache: bool = True) -> None:
        self.shards = [os.fspath(s) for s in shards]
        threads = max(1, min(TABLE_THREADS, len(self.shards)))
        with ThreadPoolExecutor(threads) as pool:
            tables = list(pool.map(lambda s: self._table_or_none(s, cache), self.shards))
        self.names: list[str] = []
        shard_of, offsets, sizes = [], [], []
        for index, table in enumerate(tables):
            for name, offset, size in table or []:
                self.names.append(name)
                shard_of.append(index)
                offsets.append(offset)
                sizes.append(size)
        if not self.names:
            raise DataError(
                f"no images ({', '.join(_IMAGE_TYPES)} members) in the {len(self.shards)} tar "
                f"shards from {self.shards[0]}; write shards with: densessl data shards "
                "--data FOLDER --out DIR"
            )
        self.shard_of = np.asarray(shard_of, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.keys = _unique_keys(self.names, self.shard_of, self.shards)

    @staticmethod
    def _table_or_none(shard: str, cache: bool) -> list[list] | None:
        try:
            return member_table(shard, cache)
        except (OSError, tarfile.TarError) as error:
            reason = str(error) or type(error).__name__
            warnings.warn(
                f"skipping tar shard {shard}: not a readable tar ({reason})",
                UnreadableImageWarning,
                3,
            )
            return None

    def __len__(self) -> int:
        return len(self.names)

    def key(self, i: int) -> str:
        return self.keys[i]

    def describe(self, i: int) -> str:
        return f"{self.shards[self.shard_of[i]]}:{self.names[i]}"

    def read_bytes(self, i: int) -> bytes:
        """The ``i``-th image's file, as stored in its shard."""
        size = int(self.sizes[i])
        try:
            with open(self.shards[self.shard_of[i]], "rb") as file:
                file.seek(int(self.offsets[i]))
                data = file.read(size)
        except OSError as error:
            raise UnreadableImage(self.describe(i), f"{type(error).__name__}: {error}") from error
        if len(data) != size:
            raise UnreadableImage(self.describe(i), f"cut short: {len(data)} of {size} bytes")
        return data

    def load_image(self, i: int) -> Image.Image:
        return decode_rgb(io.BytesIO(self.read_bytes(i)), self.describe(i))


def _unique_keys(names: list[str], shard_of: np.ndarray, shards: list[str]) -> list[str]:
    counts = Counter(names)
    return [
        name if counts[name] == 1 else f"{os.path.basename(shards[s])}/{name}"
        for name, s in zip(names, shard_of.tolist(), strict=True)
    ]
