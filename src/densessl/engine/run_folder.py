"""Owning a run folder while training in it: which folders may be one, a lock naming the
holder, and sweeping what dead holders left behind.

A new run's ``--out`` must be missing, empty or already a run (marked :data:`RUN_MARK` on first
write). Two processes in one folder would interleave metrics and overwrite checkpoints, so the
main process holds ``RUN/.lock`` (PID and host); a second one stops naming the holder. A dead
holder's lock is taken over, with the temporaries its writer left (``.NAME.densessl-tmp-PID``,
:func:`densessl.engine.checkpoint.atomic_write`), and nothing else.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from densessl.engine.checkpoint import TEMPORARY_MARK
from densessl.engine.logging import log
from densessl.errors import ConfigError, OutputError
from densessl.runs import LAST_CHECKPOINT, RUN_FOLDERS, RUN_MARK, is_run_folder

LOCK_NAME = ".lock"


def check_out_folder(run_dir: Path, resume: bool) -> None:
    """Refuse (OutputError) an ``--out`` densessl must not write into: a file, a non-empty
    non-run folder, or (``resume``) not a run. Writes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"--out {run_dir} is a file; give a folder for the run")
    if resume:
        if not is_run_folder(run_dir):
            raise OutputError(
                f"--out {run_dir} is not a densessl run (no {RUN_MARK}, no {LAST_CHECKPOINT}); "
                "check --out"
            )
        return
    if not run_dir.is_dir() or is_run_folder(run_dir):
        return
    # the lock alone: this run's main process got here first (other ranks check too)
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    if entries:
        raise OutputError(
            f"--out {run_dir} holds {len(entries)} file(s) densessl did not write (e.g. "
            f"{entries[0]}); give a new or empty folder, e.g. --out {run_dir / 'run'}"
        )


def mark_run_folder(run_dir: Path) -> None:
    """Write the mark that makes ``run_dir`` densessl's (once)."""
    mark = run_dir / RUN_MARK
    if not mark.exists():
        mark.write_text("densessl run folder: written by densessl pretrain\n")


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
    """``RUN/.lock`` held by this process (``run_dir`` created when missing); :meth:`release`
    (or a dead holder) frees it. :meth:`acquire` raises ConfigError when a live process on this
    host holds the folder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        self.created: list[Path] = []  # folders made for the lock, deepest first

    def acquire(self) -> RunLock:
        folder = self.path.parent.absolute()
        self.created = [d for d in (folder, *folder.parents) if not d.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.abandon()
            raise OutputError(
                f"cannot create the run folder {folder}: {err.strerror}; choose an --out in "
                "a folder you can write"
            ) from err
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as err:
                self.abandon()
                raise OutputError(
                    f"cannot write in the run folder {folder}: {err.strerror}; choose an --out "
                    "you can write"
                ) from err
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
        except OSError:  # gone, or never made
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
    """Delete densessl's temporaries (``.NAME.densessl-tmp-PID``) whose writer is dead, in a
    run folder and its subfolders only; returns the removed paths."""
    folder = Path(folder)
    if not is_run_folder(folder):
        return []
    places = [folder, *(folder / name for name in RUN_FOLDERS)]
    candidates = [p for place in places for p in place.glob(f".*{TEMPORARY_MARK}*")]
    removed = []
    for path in sorted(candidates):
        pid = path.name.rsplit(TEMPORARY_MARK, 1)[-1]
        if path.is_file() and pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left by killed processes in %s", len(removed),
                    folder)  # fmt: skip
    return removed
