"""Every user-facing error type.

A :class:`UserError` is a mistake the user can fix (a path, a key, a value): its message is one
line that names the file or key and says what to do, and the command line prints it and exits
with code 2. Anything else that escapes is a bug and keeps its traceback.
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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the state before the bad step is in last.pt (exit 1)."""
