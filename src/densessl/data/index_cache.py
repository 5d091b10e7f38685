"""Listings of large data sources, saved once and reused while the source is unchanged.

A listing (the image files of a folder, the members of a tar shard) is a JSON file in
``$DENSESSL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/densessl`` or ``~/.cache/densessl``), named
by a hash of what it lists, with the stamps it was made against (modification times, sizes).
The caller re-reads the stamps and uses the listing only when they match. The write is atomic
(a temporary file renamed over the old one), so processes that list at once never see half a
file; a cache that cannot be written or read is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = "densessl-listing-1"


def cache_dir() -> Path:
    """Where listings are kept: ``$DENSESSL_CACHE_DIR``, else the user's cache folder."""
    explicit = os.environ.get("DENSESSL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "densessl"


def listing_path(kind: str, what: str) -> Path:
    """The cache file of listing ``kind`` (``folder``, ``shard``) of ``what`` (a real path)."""
    digest = hashlib.sha256(f"{FORMAT}\0{kind}\0{what}".encode()).hexdigest()[:32]
    return cache_dir() / kind / f"{digest}.json"


def read_listing(kind: str, what: str) -> dict[str, Any] | None:
    """The saved listing of ``what``, or None when there is none or it cannot be read."""
    try:
        with open(listing_path(kind, what), encoding="utf-8") as file:
            listing = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(listing, dict) or listing.get("format") != FORMAT:
        return None
    if listing.get("what") != what:  # a hash collision, however unlikely
        return None
    return listing


def write_listing(kind: str, what: str, listing: dict[str, Any]) -> None:
    """Save ``listing`` of ``what`` atomically; silently skipped where the cache is not
    writable (the next run lists again)."""
    path = listing_path(kind, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump({"format": FORMAT, "what": what, **listing}, file)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        return
