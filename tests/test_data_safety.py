"""Data safety under mistakes: a refused command changes nothing, densessl writes only where it
may, ``--resume`` states what differs, ``--init`` refuses a bigger network, only regular files
are read, and every mistake is one line with exit code 2.

Commands run in-process through ``densessl.cli.main`` in the test's own folder; every refusal
goes through ``conftest.refused``, which also checks that the folder's whole tree is unchanged.
(Interrupts have their own file, tests/test_interrupts.py.)
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densessl.cli import main
from densessl.runs import LAST_CHECKPOINT, RUN_MARK, load_checkpoint, read_metrics

from conftest import free_port, refused, tiny_overrides, tree_state, write_scene_folder

STEPS = 4


def tiny(out, **extra) -> list[str]:
    """A tiny DenseCL run's overrides without ``out``/``steps`` (given as flags)."""
    values = tiny_overrides(out, STEPS, device="cpu", **extra)
    return [v for v in values if not v.startswith(("out=", "steps="))]


def pretrain(out, *extra, steps: int = STEPS, method: str = "densecl") -> list[str]:
    """A tiny run's command line; ``extra`` flags go before the overrides, ``extra`` key=value
    overrides after them (so they win)."""
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    flags = [e for e in extra if e not in overrides]
    return ["pretrain", "--method", method, "--out", str(out), "--steps", str(steps), *flags,
            *tiny(out), *overrides]  # fmt: skip


def resume(out, *extra, steps: int = STEPS) -> list[str]:
    return ["pretrain", "--out", str(out), "--resume", "--steps", str(steps), *extra]


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def finished(module_tmp_path):
    out = module_tmp_path / "run"
    assert main(pretrain(out)) == 0
    return out


@pytest.fixture
def run(finished, workspace):
    """A copy of the finished run inside the test's folder; checkpoints are hard links (they
    are replaced by rename, never rewritten in place; a case that damages one unlinks it)."""
    copy = workspace / "run"

    def link_checkpoints(src, dst):
        (os.link if src.endswith(".pt") else shutil.copy2)(src, dst)

    shutil.copytree(finished, copy, copy_function=link_checkpoints)
    return copy


# --- 3. a refused command rewrites nothing -------------------------------------------------


def test_a_refused_resume_with_other_data_keeps_the_runs_config(run, workspace, capsys):
    """A folder whose files all fail to decode would stop the run at its first step."""
    wrong = workspace / "wrong"
    wrong.mkdir()
    for i in range(8):
        (wrong / f"{i}.png").write_bytes(b"not a png")
    line = refused(capsys, resume(run, "--data", str(wrong), steps=STEPS + 1), workspace)
    assert "data.path" in line
    assert main(resume(run, steps=STEPS + 1)) == 0  # the plain resume still works


def test_a_refused_resume_on_a_damaged_metrics_line_keeps_steps(run, workspace, capsys):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][:10]  # torn in the middle: not the last line
    metrics.write_text("\n".join(lines) + "\n")
    assert "line 2" in refused(capsys, resume(run, steps=STEPS + 2), workspace)


def test_a_refused_new_run_leaves_no_folder(workspace, capsys):
    """6 images a step cannot be split over 4 accumulation steps: refused before any write."""
    out = workspace / "new"
    refused(capsys, pretrain(out, "batch_size=6", "accum_steps=4"), workspace)
    assert not out.exists()


# --- 4. densessl only touches what it wrote -------------------------------------------------


def users_folder(root: Path) -> Path:
    """A project folder with the names a run would write, and a temporary-looking file of a
    dead process deep inside."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root.mkdir()
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "notes.txt"):
        (root / name).write_text(f"the user's own {name}\n")
    (root / "src").mkdir()
    (root / "src" / f".model.py.tmp-{dead.pid}").write_text("work in progress\n")
    (root / "src" / f".model.py.densessl-tmp-{dead.pid}").write_text("work in progress\n")
    return root


@pytest.mark.parametrize("out", ["project", "."])
def test_out_on_a_folder_densessl_did_not_make_is_refused(workspace, capsys, out):
    project = users_folder(workspace / "project")
    os.chdir(project.parent if out == "project" else project)
    line = refused(capsys, pretrain(out), workspace)
    assert "densessl did not write" in line


def test_a_resume_in_a_folder_that_is_no_run_is_refused(workspace, capsys):
    project = users_folder(workspace / "project")
    (project / "config.yaml").write_text("method:\n  name: densecl\n")
    refused(capsys, resume(project), workspace)


def test_an_empty_folder_becomes_a_marked_run(workspace):
    (workspace / "empty").mkdir()
    assert main(pretrain(workspace / "empty", steps=1)) == 0
    assert (workspace / "empty" / RUN_MARK).is_file()


def test_only_densessls_own_temporaries_in_the_run_are_swept(run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own = run / "checkpoints" / f".last.pt.densessl-tmp-{dead.pid}"
    users = [run / f".notes.txt.tmp-{dead.pid}", run / "mine" / f".x.densessl-tmp-{dead.pid}"]
    for path in (own, *users):
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert main(resume(run, steps=STEPS + 1)) == 0
    assert not own.exists() and all(path.exists() for path in users)


@pytest.mark.parametrize("name", ["config.yaml", "summary.json", "metrics.jsonl", RUN_MARK,
                                  "checkpoints/step.pt", "tensorboard/x.pt"])  # fmt: skip
def test_export_never_writes_a_runs_own_file_even_forced(run, workspace, capsys, name):
    line = refused(capsys, ["export", str(run), "--format", "torchvision", "--out",
                            str(run / name), "--force"], workspace)  # fmt: skip
    assert "only training writes" in line


def test_export_into_a_run_folder_needs_a_name_of_the_users(run, workspace, capsys):
    assert "file name of your own" in refused(
        capsys, ["export", str(run), "--format", "torchvision", "--out", str(run)], workspace
    )
    assert main(["export", str(run), "--format", "torchvision", "--out",
                 str(run / "backbone.pt")]) == 0  # fmt: skip
    assert "conv1.weight" in torch.load(run / "backbone.pt", weights_only=True)


# --- 5. --init refuses a bigger network ------------------------------------------------------


def saved_state_dict(model, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def test_init_with_a_deeper_resnet_is_refused_with_both_counts(workspace, capsys):
    import torchvision

    weights = saved_state_dict(torchvision.models.resnet34(), workspace / "r34.pth")
    line = refused(capsys, pretrain(workspace / "new", "--init", str(weights)), workspace)
    assert "96 backbone tensors that resnet18 lacks" in line and "120 of 120" in line
    assert "--init-partial" in line


def test_init_partial_loads_what_matches(workspace):
    import torchvision

    deeper = torchvision.models.resnet34()
    weights = saved_state_dict(deeper, workspace / "r34.pth")
    out = workspace / "partial"
    assert main(pretrain(out, "--init", str(weights), "--init-partial", steps=1)) == 0
    loaded = load_checkpoint(out / LAST_CHECKPOINT)["config"]
    assert loaded["init_partial"] is True


def test_init_with_a_deeper_vit_is_refused(workspace, capsys):
    from densessl.models.vit import ViTBackbone

    state = ViTBackbone("vit_test_patch8", img_size=48).state_dict()
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for key in [k for k in state if k.startswith("blocks.0.")]:  # two blocks more
        for extra in (blocks, blocks + 1):
            state[key.replace("blocks.0.", f"blocks.{extra}.", 1)] = state[key]
    torch.save(state, workspace / "deeper.pth")
    argv = pretrain("new", "--init", "deeper.pth", "backbone=vit_test_patch8",
                    "data.image_size=48", method="mocov2")  # fmt: skip
    assert "vit_test_patch8 lacks" in refused(capsys, argv, workspace)


def test_init_with_its_own_weights_and_a_classifier_still_loads(workspace):
    """A torchvision ResNet-18 file holds fc.* besides the backbone: a head, not a bigger net."""
    import torchvision

    weights = saved_state_dict(torchvision.models.resnet18(), workspace / "r18.pth")
    assert main(pretrain(workspace / "own", "--init", str(weights), steps=1)) == 0


# --- 6. --resume states what differs ----------------------------------------------------------


def test_resume_with_another_recipe_lists_each_difference(run, workspace, capsys):
    recipe = workspace / "other.yaml"
    recipe.write_text("method:\n  name: densecl\n  temperature: 0.5\noptim:\n  base_lr: 0.1\n")
    line = refused(capsys, resume(run, "--config", str(recipe)), workspace)
    assert "method.temperature 0.2 -> 0.5" in line and "optim.base_lr 0.03 -> 0.1" in line


def test_resume_with_another_batch_is_refused(run, workspace, capsys):
    assert "batch_size 8 -> 4" in refused(capsys, resume(run, "--batch-size", "4"), workspace)


def test_resume_applies_and_logs_the_settings_that_may_change(run, caplog):
    caplog.set_level("INFO", logger="densessl")
    args = resume(run, "--workers", "1", "log_every=3", "health_every=-1", steps=STEPS + 5)
    assert main(args) == 0
    said = [r.getMessage() for r in caplog.records]
    assert "resuming with data.workers 1 (was 0)" in said
    assert "resuming with log_every 3 (was 1)" in said
    assert "resuming with health_every -1 (was 0)" in said
    # with no health checks, the first step of the session, every third and the last are logged
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6, 9]


def test_resume_with_a_recipe_that_agrees_is_accepted(run, workspace):
    recipe = workspace / "same.yaml"
    recipe.write_text("method:\n  name: densecl\n  temperature: 0.2\n")
    assert main(resume(run, "--config", str(recipe), steps=STEPS + 1)) == 0


# --- 7. only regular files are read ------------------------------------------------------------


@pytest.mark.slow
def test_a_fifo_in_the_data_folder_is_skipped_and_counted(workspace):
    data = write_scene_folder(workspace / "data", 2, 64, seed=0)
    os.mkfifo(data / "stuck.png")
    os.mkfifo(data / "stuck.jpg")
    # a batch of 4 from 4 files reads every file once
    argv = pretrain(workspace / "run", "--data", str(data), "batch_size=4", steps=1)
    cmd = [sys.executable, "-m", "densessl.cli", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((workspace / "run" / "summary.json").read_text())
    assert summary["skipped_files"] == 2
    assert sorted(Path(p).name for p in summary["skipped_paths"]) == ["stuck.jpg", "stuck.png"]


# --- 8. one line, exit code 2 ---------------------------------------------------------------


def test_every_file_unreadable_with_loader_workers_is_one_line(workspace, capsys):
    data = workspace / "broken"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.png").write_bytes(b"not a png")
    argv = pretrain(workspace / "run", "--data", str(data), "data.workers=2", "batch_size=4",
                    steps=1)  # fmt: skip
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and "none of the 4 images could be read" in lines[0], lines
    assert "Traceback" not in lines[0]
    assert not multiprocessing.active_children()  # the workers stopped with the run


@pytest.mark.parametrize("missing", ["step", "config", "model", "rng"])
def test_a_checkpoint_without_an_entry_is_one_line(run, workspace, capsys, missing):
    checkpoint = run / LAST_CHECKPOINT
    state = torch.load(checkpoint, weights_only=True)
    del state[missing]
    checkpoint.unlink()  # break the hard link: the shared run keeps its checkpoint
    torch.save(state, checkpoint)
    for argv in (resume(run, steps=STEPS + 1),
                 ["export", str(run), "--format", "torchvision", "--out", "b.pt"]):  # fmt: skip
        assert repr(missing) in refused(capsys, argv, workspace)


def test_out_in_a_folder_that_cannot_be_made_is_one_line(workspace, capsys):
    (workspace / "notes.txt").write_text("a file")
    refused(capsys, pretrain("notes.txt/run"), workspace)
    if os.access("/sys", os.W_OK) and not Path("/sys/densessl_probe").exists():
        try:
            os.mkdir("/sys/densessl_probe")
        except OSError:
            pass  # read-only as expected: the case below is real
        else:
            os.rmdir("/sys/densessl_probe")
            return
    assert "cannot create" in refused(capsys, pretrain("/sys/densessl_run"), workspace)


def test_out_naming_an_existing_file_is_one_line(workspace, capsys):
    (workspace / "model.pt").write_bytes(b"precious")
    assert "is a file" in refused(capsys, pretrain("model.pt"), workspace)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last(
    workspace, capsys, monkeypatch
):
    from densessl.engine import checkpoint

    out = workspace / "run"
    real = checkpoint.torch.save

    def full_at_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_at_step_4)
    assert main(pretrain(out, "checkpoint_every=2", steps=6)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in line and "checkpoint of step 2" in line
    assert load_checkpoint(out / LAST_CHECKPOINT)["step"] == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("override", "key"),
    [("optim.base_lr=-0.1", "optim.base_lr"), ("optim.momentum=1.5", "optim.momentum"),
     ("optim.weight_decay=-1", "optim.weight_decay"), ("optim.betas=[0.9,1.5]", "optim.betas")],
)  # fmt: skip
def test_a_value_torch_would_refuse_is_one_line_before_the_run(workspace, capsys, override, key):
    assert key in refused(capsys, pretrain(workspace / "run", override), workspace)
    assert not (workspace / "run").exists()


def test_a_queue_shorter_than_the_batch_is_one_line_before_the_run(workspace, capsys):
    line = refused(capsys, pretrain(workspace / "run", "method.queue_size=4"), workspace)
    assert "method.queue_size=4" in line and "at least 8" in line


def test_other_processes_of_a_torchrun_job_stay_quiet(workspace, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["pretrain"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["pretrain"]) == 2
    assert capsys.readouterr().err.startswith("densessl: error: ")


@pytest.mark.dist
@pytest.mark.slow
def test_a_mistake_under_torchrun_is_printed_once(workspace):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), "-m", "densessl.cli",
           *pretrain(workspace / "run", "optim.base_lr=-1")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    said = (done.stdout + done.stderr).count("densessl: error:")
    assert done.returncode != 0 and said == 1, done.stderr
    assert tree_state(workspace) == {}


@pytest.mark.parametrize("command", ["eval", "viz"])
def test_eval_and_viz_outputs_never_replace_a_runs_files(run, workspace, capsys, command):
    argv = {
        "eval": ["eval", "knn-seg", "--weights", str(run), "--json", str(run / "summary.json")],
        "viz": ["viz", "loss", str(run), "--out", str(run / "metrics.jsonl")],
    }[command]
    assert "only training writes" in refused(capsys, argv, workspace)
