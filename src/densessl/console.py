"""The ``densessl`` logger on the console: one timestamped line per message, on stderr.

Set up before anything heavy is imported, so the command line can speak (a resumed run's
changed settings, say) before torch loads.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("densessl")


def setup_console_logging(is_main: bool) -> None:
    """INFO messages from the main process only; other ranks report warnings and errors."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s densessl: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
