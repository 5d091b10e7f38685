"""Ctrl-C and SIGTERM (preemption) that never leave a run half-saved.

* **Between steps only.** The first SIGINT or SIGTERM asks the loop to stop
  (:class:`StopRequests`): the step under way finishes, the state is saved, the run ends. A
  second signal stops at once; the last checkpoint written stays whole.
* **Never during a write.** Inside :func:`signals_deferred` (every atomic file write) a signal
  is delivered once the write is over, so a checkpoint is the old file or the whole new one.

Handlers belong to the main thread; elsewhere both helpers do nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver each one received, once."""
    if not _main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: received.append(sig))
                for sig in STOP_SIGNALS}  # fmt: skip
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)


class StopRequests:
    """SIGINT/SIGTERM handlers for the training loop (a context manager).

    The first signal sets :attr:`requested`; the loop stops at the next step boundary. A second
    raises KeyboardInterrupt (outside writes)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequests:
        if _main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


WORKER_GRACE_SECONDS = 60


def data_worker_signals() -> None:
    """Signal handling for a data-loader worker process (call it in the worker).

    Ctrl-C and a process-group SIGTERM reach the workers with the trainer, which still needs
    them for the step it finishes before saving. So a worker ignores SIGINT and on SIGTERM serves
    ``WORKER_GRACE_SECONDS`` more, then exits 0 (not reported as a crash); ignoring SIGTERM
    would hang a loader ending its workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave_after_grace)


def _leave_after_grace(signum: int, frame: object) -> None:
    signal.signal(signal.SIGALRM, lambda signum, frame: os._exit(0))
    signal.alarm(WORKER_GRACE_SECONDS)
