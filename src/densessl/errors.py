"""Every user-facing error type.

A :class:`UserError` is a mistake the user can fix: one line naming the file or key and what to
do; the command line prints it and exits with 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; one line, exit code 2 at the command line."""


class ConfigError(UserError):
    """A configuration key, value, recipe file or override that cannot be used."""


class DataError(UserError):
    """A data problem: a missing or empty folder, an unreadable annotation, a wrong layout."""


class WeightsError(UserError):
    """Weights that cannot be turned into the network asked for."""


class ExportError(UserError):
    """A run or checkpoint that cannot be exported in the format asked for."""


class OutputError(UserError):
    """An output path densessl will not write: a run's own file, a folder that is not a run,
    an existing file without ``--force``, or a place it cannot write."""


class StorageError(UserError):
    """A write failed (a full disk, a read-only folder); what was saved before is intact."""


class UnreadableImageWarning(RuntimeWarning):
    """Warned once per skipped image file, printed as one line by the command line."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the state before the bad step is in last.pt (exit 1)."""


def unwrapped(err: UserError) -> UserError:
    """``err`` with its own message when a data-loading worker raised it (torch puts the
    worker's whole traceback in the message, ending ``module.ErrorType: message``)."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = [line for line in text.splitlines() if line.strip()][-1]
    return type(err)(last.split(": ", 1)[-1])
