"""The package as users get it: recipes by name, the version, ``python -m densessl``, the
extras, and a command line that answers without importing torch.

(The wheel itself is built, installed outside the checkout and run by .ci/wheel_smoke.sh, which
``make test`` calls after this suite.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import densessl
from densessl.cli import main
from densessl.recipes import RECIPES_DIR, purpose, recipe_names, resolve_recipe

from conftest import refused, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_a_shipped_recipe_is_found_by_name_and_a_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("densecl_small_data") == RECIPES_DIR / "densecl_small_data.yaml"
    assert resolve_recipe("densecl_small_data.yaml") == RECIPES_DIR / "densecl_small_data.yaml"
    (tmp_path / "densecl_small_data.yaml").write_text("method:\n  name: densecl\n")
    assert resolve_recipe("densecl_small_data.yaml") == Path("densecl_small_data.yaml")
    assert resolve_recipe("no_such_recipe") == Path("no_such_recipe")


def test_pretrain_takes_a_recipe_by_name(tmp_path):
    from densessl.api import pretrain_config

    over = [o for o in tiny_overrides(tmp_path / "run") if not o.startswith("batch_size")]
    cfg = pretrain_config("mocov2", config="mocov2_small_data", overrides=over)
    assert cfg.optim.base_lr == 0.48 and cfg.data.image_size == 64  # recipe, then overrides


def test_an_unknown_recipe_name_is_one_line_pointing_to_the_list(tmp_path, capsys):
    line = refused(capsys, ["pretrain", "--method", "densecl", "--config", "densecl_smal"],
                   tmp_path)  # fmt: skip
    assert "densecl_smal" in line and "densessl list" in line


def test_list_prints_every_shipped_recipe_with_its_purpose(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()
              if line.startswith("  ")}  # fmt: skip
    assert sorted(listed) == recipe_names() and len(listed) >= 20
    assert listed["densecl_small_data"] == "Small-data recipe for DenseCL"
    assert listed["densecl_r50_in1k_200ep"] == "DenseCL, ResNet-50, ImageNet-1k, 200 epochs"
    for name in recipe_names():  # each purpose is the file's own first comment line
        first = (RECIPES_DIR / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith("# " + purpose(RECIPES_DIR / f"{name}.yaml"))


def test_the_repository_keeps_one_copy_of_each_recipe():
    assert not (ROOT / "configs").exists()
    copies = [p for p in ROOT.rglob("densecl_small_data.yaml")
              if not {".venv", "build"} & set(p.parts)]  # fmt: skip
    assert copies == [RECIPES_DIR / "densecl_small_data.yaml"]


def test_the_version_is_written_once_and_printed(capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "densessl.__version__"}
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"densessl {densessl.__version__}\n"


def test_python_m_densessl_is_the_command_line():
    done = subprocess.run([sys.executable, "-m", "densessl", "--help"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "densessl pretrain --method densecl" in done.stdout


def test_help_and_a_mistake_answer_without_importing_torch():
    """What makes them quick: the parser and the first checks import nothing heavy."""
    code = (
        "import sys\nfrom densessl.cli import main\n"
        "for argv in (['--help'], ['pretrain'], ['pretrain', '--method', 'densecll'],"
        " ['eval', 'finetune-seg', '--help'],"
        " ['pretrain', '--method', 'densecl', '--steps', '0']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_command_line_lists_the_methods_and_layouts_that_register():
    import densessl.eval.segmentation
    import densessl.methods  # noqa: F401
    from densessl.eval.protocols.inputs import LAYOUTS
    from densessl.registry import METHODS, SEG_LAYOUTS, method_names

    assert method_names() == METHODS.names()
    assert sorted(LAYOUTS) == SEG_LAYOUTS.names()


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    from densessl.data.reference_search import opencv
    from densessl.errors import ConfigError

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now fails
    with pytest.raises(ConfigError, match=r"pip install 'densessl\[soco\]'"):
        opencv()


def test_the_wheel_declares_what_the_package_reads():
    """The package-data list is the whole of it: every recipe and reference file matches."""
    import fnmatch

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["include-package-data"] is False
    patterns = project["tool"]["setuptools"]["package-data"]["densessl"]
    package = Path(densessl.__file__).parent
    read_at_run_time = [*RECIPES_DIR.glob("*.yaml"), *(package / "reference").glob("*")]
    for path in read_at_run_time:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_the_demo_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    line = refused(capsys, ["demo", "--out", str(tmp_path / "mine"), "--quick"], tmp_path)
    assert "the demo did not write" in line


def test_output_into_a_closed_pipe_ends_quietly():
    """`densessl list | head -1`: the reader leaves early; the writer ends with the exit status
    of a process killed by SIGPIPE and no traceback."""
    job = subprocess.Popen([sys.executable, "-m", "densessl", "list"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    job.stdout.close()  # before anything is written: every write meets a closed pipe
    stderr = job.stderr.read().decode()
    assert job.wait(timeout=120) == 128 + signal.SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
