"""Common user mistakes on the command line: each ends with exactly one line on stderr, naming
what is wrong, and exit code 2 (no traceback, nothing trained, nothing written in the folder).

All run in-process through ``densessl.cli.main``, in an empty working folder, so a mistake
that slipped through to training would show up as written files.
"""

from __future__ import annotations

import pytest

from densessl.cli import build_parser, main
from densessl.registry import method_names

from conftest import refused

# (id, argv, a word the message must contain). Files named here are made by `workspace`.
MISTAKES = [
    ("no-method", ["pretrain"], "--method"),
    ("unknown-method", ["pretrain", "--method", "densecll"], "densecll"),
    ("backbone-typo", ["pretrain", "--method", "densecl", "--backbone", "resnet5O"], "resnet5O"),
    ("steps-zero", ["pretrain", "--method", "densecl", "--steps", "0"], "--steps"),
    ("steps-negative", ["pretrain", "--method", "densecl", "--steps", "-3"], "--steps"),
    ("epochs-zero", ["pretrain", "--method", "densecl", "--epochs", "0"], "--epochs"),
    ("steps-and-epochs", ["pretrain", "--method", "densecl", "--steps", "5", "--epochs", "2"],
     "--epochs"),
    ("batch-zero", ["pretrain", "--method", "densecl", "--batch-size", "0"], "batch_size"),
    ("workers-negative", ["pretrain", "--method", "densecl", "--workers", "-1"], "workers"),
    ("wrong-type", ["pretrain", "--method", "densecl", "batch_size=abc"], "batch_size"),
    ("unknown-key", ["pretrain", "--method", "densecl", "method.no_such_key=1"], "no_such_key"),
    ("not-key-value", ["pretrain", "--method", "densecl", "lr0.1"], "key=value"),
    ("bad-choice", ["pretrain", "--method", "densecl", "precision=fp8"], "precision"),
    ("missing-recipe", ["pretrain", "--method", "densecl", "--config", "nope.yaml"], "nope.yaml"),
    ("broken-recipe", ["pretrain", "--method", "densecl", "--config", "broken.yaml"],
     "broken.yaml"),
    ("recipe-of-other-method",
     ["pretrain", "--method", "mocov2", "--config", "densecl.yaml"], "densecl"),
    ("missing-data", ["pretrain", "--method", "densecl", "--data", "no_such_folder"],
     "no_such_folder"),
    ("empty-data", ["pretrain", "--method", "densecl", "--data", "empty"], "no images"),
    ("data-is-a-file", ["pretrain", "--method", "densecl", "--data", "notes.txt"], "not a folder"),
    ("resume-without-out", ["pretrain", "--resume"], "--out"),
    ("resume-nothing", ["pretrain", "--resume", "--out", "runs/none"], "nothing to resume"),
    ("device-typo", ["pretrain", "--method", "densecl", "--device", "gpu"], "--device"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("misspelt-flag", ["pretrain", "--metod", "densecl"], "--metod"),
    ("export-no-run", ["export", "runs/none", "--format", "torchvision", "--out", "b.pt"],
     "runs/none"),
    ("export-format", ["export", "runs/none", "--format", "onnx", "--out", "b.pt"], "onnx"),
    ("eval-missing-weights", ["eval", "knn-seg", "--weights", "nope.pt"], "nope.pt"),
    ("eval-text-weights", ["eval", "linear-seg", "--weights", "notes.txt"], "notes.txt"),
    ("eval-backbone-typo", ["eval", "knn-seg", "--weights", "random", "--backbone", "resnet5O"],
     "resnet5O"),
    ("eval-layout", ["eval", "knn-seg", "--weights", "random", "--format", "coco"], "coco"),
    ("eval-unknown-option", ["eval", "knn-seg", "--weights", "random", "lr=0.1"], "lr"),
    ("knn-k-zero", ["eval", "knn-seg", "--weights", "random", "--k", "0"], "k=0"),
    ("viz-loss-no-run", ["viz", "loss", "runs/none", "--out", "x.png"], "runs/none"),
]  # fmt: skip


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image, not weights")
    (tmp_path / "broken.yaml").write_text("batch_size: [8\n")
    (tmp_path / "densecl.yaml").write_text("method:\n  name: densecl\n")
    return tmp_path


def test_there_are_at_least_twenty_mistakes():
    assert len(MISTAKES) >= 20


@pytest.mark.parametrize("argv, word", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_line_with_exit_code_2_and_changes_nothing(workspace, capsys, argv, word):
    line = refused(capsys, argv, workspace)
    assert word in line, line
    assert not (workspace / "runs").exists()  # nothing was trained


def test_debug_shows_the_traceback_of_a_mistake(workspace):
    from densessl.errors import ConfigError

    with pytest.raises(ConfigError, match="choose a method"):
        main(["--debug", "pretrain"])


def test_top_level_help_is_for_users_and_every_option_says_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "densessl pretrain --method densecl" in text and "densessl list" in text
    assert "Exit codes" not in text and "thin layer" not in text  # not the module docstring
    named = " ".join(text.split("dense prediction (", 1)[1].split(")", 1)[0].split())
    assert sorted(m.lower().replace("-", "") for m in named.split(", ")) == sorted(method_names())

    def options(parser, name):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub_name, sub in action.choices.items():
                    yield from options(sub, f"{name} {sub_name}")
            elif action.dest != "help":
                yield name, action, parser._get_formatter()._get_help_string(action)

    undocumented = [
        f"{name} {action.option_strings or action.dest}"
        for name, action, text in options(build_parser(), "densessl")
        if not action.help or not any(w in text for w in ("default", "required"))
    ]
    assert undocumented == []


def test_list_prints_the_registries(capsys):
    from densessl.eval.segmentation import LAYOUTS
    from densessl.export import FORMATS
    from densessl.registry import BACKBONES, METHODS

    assert main(["list"]) == 0
    out = capsys.readouterr().out.split("\nrecipes")[0]  # the recipes: tests/test_package.py
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["methods"].split(", ") == METHODS.names()
    assert lines["backbones"].split(", ") == BACKBONES.names()
    assert lines["export formats"].split(", ") == sorted(FORMATS)
    assert lines["segmentation layouts"].split(", ") == sorted(LAYOUTS)
    assert {"densecl", "dino", "soco"} <= set(lines["methods"].split(", "))
    assert {"resnet50", "vit_small_patch16"} <= set(lines["backbones"].split(", "))
