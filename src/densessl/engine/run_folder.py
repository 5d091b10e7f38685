"""Owning a run folder while training in it: a lock naming the holder, and sweeping what dead
holders left behind.

Two processes training into one ``--out`` would interleave their metrics and overwrite each
other's checkpoint, so the main process holds ``RUN/.lock`` (its PID and host) for the whole
run. A second process stops with one line naming the holder. A lock whose process is gone (a
``kill -9``) is stale and is taken over. Taking the folder over also removes the temporary files
a killed writer left (``.last.pt.tmp-PID``, see :func:`densessl.engine.checkpoint.atomic_write`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from densessl.engine.logging import log
from densessl.errors import ConfigError

LOCK_NAME = ".lock"
TEMPORARY_MARK = ".tmp-"  # atomic_write's temporaries: ".<name>.tmp-<pid>"


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (signal 0 probes, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """``RUN/.lock`` held by this process; :meth:`release` (or a dead holder) frees it.

    Args:
        run_dir: the run folder; created when missing.

    Raises:
        ConfigError: from :meth:`acquire`, when a live process on this host holds the folder.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        self.created: list[Path] = []  # folders made for the lock, deepest first

    def acquire(self) -> RunLock:
        folder = self.path.parent.absolute()
        self.created = [d for d in (folder, *folder.parents) if not d.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return self
        raise ConfigError(f"could not lock {self.path}; another process is starting in it")

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, host = [*self.path.read_text().split(), "", ""][:2]
        except FileNotFoundError:
            return  # released meanwhile
        pid = int(pid_text) if pid_text.isdigit() else 0
        ours = pid == os.getpid() and host == socket.gethostname()
        if pid and not ours and (host != socket.gethostname() or process_alive(pid)):
            raise ConfigError(
                f"{self.path.parent} is in use by process {pid} on {host} (lock {self.path}); "
                "wait for it to finish or stop it, or train into another --out"
            )
        if not ours:
            log.warning("taking over %s: its process %s is gone", self.path, pid_text or "?")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        try:
            if self.path.read_text().strip() == self.owner:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def abandon(self) -> None:
        """Release, and remove the folders made for the lock if nothing else was written in
        them (a run that failed before its first write leaves no trace)."""
        self.release()
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty: something was written there, keep it
                break


def sweep_orphan_temporaries(folder: Path) -> list[Path]:
    """Delete ``.*.tmp-PID`` files under ``folder`` (recursively) whose writer is dead.

    Returns:
        The removed paths.
    """
    removed = []
    for path in sorted(Path(folder).rglob(f".*{TEMPORARY_MARK}*")):
        pid = path.name.rsplit(TEMPORARY_MARK, 1)[-1]
        if path.is_file() and pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left by killed processes in %s", len(removed),
                    folder)  # fmt: skip
    return removed
