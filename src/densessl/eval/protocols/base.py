"""What an evaluation protocol declares, so that the command line and the Python API derive
their sub-command, flags and dispatch from it (``EVAL_PROTOCOLS`` in :mod:`densessl.registry`).

A protocol file registers one :class:`EvalProtocol` and imports nothing heavy at module level:
the command line builds its parser from every protocol before torch is loaded.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Flag:
    """One command-line flag: ``--crop-size`` fills the keyword ``crop_size``."""

    name: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    nargs: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        given = {"type": self.type, "nargs": self.nargs, "choices": self.choices}
        extra = {key: value for key, value in given.items() if value is not None}
        parser.add_argument(self.name, default=self.default, help=self.help, **extra)


def write_scores_json(scores: Any, path: Path) -> None:
    """``scores.to_dict()`` as JSON, written atomically."""
    from densessl.engine.checkpoint import atomic_write

    text = (json.dumps(scores.to_dict(), indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def print_table(scores: Any, args: argparse.Namespace) -> None:
    """The scores' table under ``<protocol>: <weights>``, and ``--json`` if given."""
    print(scores.format_table(f"{args.eval_command}: {args.weights}"))
    if args.json:
        write_scores_json(scores, Path(args.json))


@dataclass(frozen=True)
class EvalProtocol:
    """An evaluation protocol: ``densessl eval <name>`` and ``densessl.api.evaluate(name, ...)``.

    Attributes:
        name: the sub-command.
        summary: one line for ``densessl eval --help``; description: its own ``--help``.
        flags: its flags beyond the shared ones (``--weights``, ``--backbone``, ``--network``,
            ``--device``, ``--config``, ``--json``, ``key=value`` overrides).
        evaluate: ``evaluate(weights, data=None, **keywords) -> scores``, the Python API.
        keywords: the command line's values -> ``evaluate``'s keywords beyond ``data`` and the
            shared ones (default: each flag's value under its keyword).
        checks: refusals to make before anything runs (an output file that would overwrite a
            run's files).
        report: print the scores (and write ``--json``).
    """

    name: str
    summary: str
    description: str
    flags: tuple[Flag, ...]
    evaluate: Callable[..., Any]
    keywords: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    checks: Callable[[argparse.Namespace], None] = field(default=lambda args: None)
    report: Callable[[Any, argparse.Namespace], None] = print_table

    def keywords_of(self, args: argparse.Namespace) -> dict[str, Any]:
        if self.keywords is not None:
            return self.keywords(args)
        return {f.dest: getattr(args, f.dest) for f in self.flags if f.dest != "data"}
