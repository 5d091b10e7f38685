"""Evaluation protocols are a registry: a protocol registered in one file is a ``densessl eval``
sub-command with its flags, is dispatched with its keywords, and is reachable from
``densessl.api.evaluate``, with no edit to cli.py or api.py."""

from __future__ import annotations

import json

import pytest

from densessl import api
from densessl.cli import build_parser, main
from densessl.eval.protocols import EVAL_PROTOCOLS, EvalProtocol, Flag


class Scores:
    def __init__(self, got: dict) -> None:
        self.got = got

    def format_table(self, title: str) -> str:
        return f"{title}: {sorted(self.got.items())}"

    def to_dict(self) -> dict:
        return {key: str(value) for key, value in self.got.items()}


def echo(weights, data=None, **keywords):
    """A protocol that returns what it was called with."""
    return Scores({"weights": weights, "data": data, **keywords})


@pytest.fixture
def echo_protocol(monkeypatch):
    flags = (Flag("--data", "a folder"), Flag("--rounds", "how many", type=int, default=3))
    protocol = EvalProtocol("echo", "echo its keywords", "Echo its keywords.", flags, echo)
    monkeypatch.setitem(EVAL_PROTOCOLS._entries, "echo", protocol)
    return protocol


def test_a_registered_protocol_is_a_subcommand_with_its_flags(echo_protocol, tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = ["eval", "echo", "--weights", "random", "--rounds", "5", "--json", str(out), "k=v"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "echo: random" in printed and "('rounds', 5)" in printed
    written = json.loads(out.read_text())
    assert written["rounds"] == "5" and written["overrides"] == "['k=v']"
    assert written["data"] == "None" and written["backbone"] == "None"


def test_a_registered_protocol_is_reachable_from_the_api(echo_protocol):
    scores = api.evaluate("echo", "w", "d", rounds=2)
    assert scores.got == {"weights": "w", "data": "d", "rounds": 2}


def test_every_registered_protocol_is_in_the_help_and_the_list(capsys):
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    kinds = eval_parser._subparsers._group_actions[0].choices
    assert set(kinds) == set(EVAL_PROTOCOLS.names()) >= {"linear-seg", "knn-seg", "detect"}
    assert api.components()["evaluation protocols"] == EVAL_PROTOCOLS.names()


def test_an_unknown_protocol_is_refused_in_one_line():
    with pytest.raises(KeyError, match="unknown evaluation protocol 'nope'; known: detect"):
        api.evaluate("nope", "random")
