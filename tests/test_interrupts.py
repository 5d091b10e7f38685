"""Ctrl-C at any moment of a step: the saved state is the state after a whole step, and a resume
from it equals the run that was never interrupted.

A real SIGINT is sent to this process from inside each phase of one step (the data, the
forward, the backward, after the optimizer step, after the teacher and queue update, the
logging, a periodic checkpoint, inside the checkpoint write), for MoCo-v2, DenseCL and DINO.
The checkpoint the interrupt leaves must hold, tensor for tensor, what the straight run's
checkpoint of the same step holds (weights, optimizer, queues, centre, RNG, data position);
resumed to the end, the run must log the straight run's losses and end with its state.
A second signal stops at once without saving the step under way; the previous checkpoint is
whole and the resume is exact too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import densessl.engine.logging as engine_logging
import densessl.engine.session as engine_session
import densessl.engine.step as engine_step
from densessl.engine.train import train
from densessl.methods import get_method
from densessl.runs import load_checkpoint

from engine_harness import tiny_config

STEPS, EVERY = 6, 2  # periodic checkpoints at steps 2 and 4
AT = 2  # the step (from 0) the interrupt lands in; its checkpoint holds step 3
SAVE_AT = 4  # the periodic checkpoint the save-phase interrupts land in


def interrupt(times: int = 1) -> None:
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)


def _data(patch, name, times):
    real = engine_step.augment_batch
    calls = []

    def augment(batch):
        calls.append(1)
        if len(calls) == AT + 1:
            interrupt(times)
        return real(batch)

    patch.setattr(engine_step, "augment_batch", augment)


def _forward(patch, name, times):
    cls = get_method(name)
    real = cls.forward

    def forward(self, batch, state):
        if state.step == AT:
            interrupt(times)
        return real(self, batch, state)

    patch.setattr(cls, "forward", forward)


def _backward(patch, name, times):
    real = torch.Tensor.backward
    calls = []

    def backward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == AT + 1 and self.requires_grad:
            self.register_hook(lambda grad: interrupt(times))  # runs inside autograd's pass
        return real(self, *args, **kwargs)

    patch.setattr(torch.Tensor, "backward", backward)


def _optimizer_step(patch, name, times):
    calls = []

    def after(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == AT + 1:
            interrupt(times)

    _HANDLES.append(register_optimizer_step_post_hook(after))


def _teacher_update(patch, name, times):
    cls = get_method(name)
    real = cls.after_step

    def after_step(self, state):
        real(self, state)  # teacher, queue and centre have moved
        if state.step == AT:
            interrupt(times)

    patch.setattr(cls, "after_step", after_step)


def _logging(patch, name, times):
    real = engine_logging.MetricsWriter.write

    def write(self, record):
        if record["step"] == AT + 1:
            interrupt(times)
        real(self, record)

    patch.setattr(engine_logging.MetricsWriter, "write", write)


def _periodic_checkpoint(patch, name, times):
    real = engine_session.Session.save

    def save(self, step):
        if step == SAVE_AT:
            interrupt(times)
        return real(self, step)

    patch.setattr(engine_session.Session, "save", save)


def _checkpoint_write(patch, name, times):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == SAVE_AT:
            interrupt(times)  # inside atomic_write: delivered once the file is whole
        return real(obj, f, *args, **kwargs)

    patch.setattr(torch, "save", save)


_HANDLES: list = []
PHASES = {
    "data": (_data, AT + 1),
    "forward": (_forward, AT + 1),
    "backward": (_backward, AT + 1),
    "optimizer-step": (_optimizer_step, AT + 1),
    "teacher-and-queue-update": (_teacher_update, AT + 1),
    "logging": (_logging, AT + 1),
    "periodic-checkpoint": (_periodic_checkpoint, SAVE_AT),
    "checkpoint-write": (_checkpoint_write, SAVE_AT),
}
# Three methods whose state spans what a step changes besides the weights: a key queue, a second
# (dense) queue, a teacher with a centre. Every registered method's resume is exact in
# test_resume_every_method; this file interrupts each phase of the step.
METHODS = ("mocov2", "densecl", "dino")


@pytest.fixture(autouse=True)
def _remove_global_hooks():
    yield
    while _HANDLES:
        _HANDLES.pop().remove()


@pytest.fixture(scope="module")
def straight(module_tmp_path):
    """Each method's uninterrupted run, with a checkpoint kept at every step."""
    runs = {}
    for name in METHODS:
        out = module_tmp_path / "straight" / name
        train(tiny_config(name, out, steps=STEPS, checkpoint_every=1, keep_checkpoints=STEPS))
        for unused in (1, 5):  # the cases compare steps 2, 3, 4 and 6
            (out / "checkpoints" / f"step_{unused:08d}.pt").unlink()
        runs[name] = out
    return runs


def logged_losses(run_dir) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def assert_same_state(a: dict, b: dict, where: str = "") -> None:
    """Every tensor (and plain value) of two checkpoints' training state is equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


TRAINING_STATE = ("step", "model", "optimizer", "scaler", "rng", "data_position", "skipped_files")


def assert_checkpoint_equals_straight(checkpoint, straight_run, step: int) -> None:
    state = load_checkpoint(checkpoint)
    assert state["step"] == step
    reference = load_checkpoint(straight_run / "checkpoints" / f"step_{step:08d}.pt")
    for key in TRAINING_STATE:
        assert_same_state(state[key], reference[key], key)


def interrupted_then_resumed(name, phase, times, tmp_path, straight_run, saved_step):
    inject, _ = PHASES[phase]
    out = tmp_path / "split"
    with pytest.MonkeyPatch.context() as patch:
        inject(patch, name, times)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(name, out, steps=STEPS, checkpoint_every=EVERY))
    assert_checkpoint_equals_straight(out / "checkpoints" / "last.pt", straight_run, saved_step)
    train(tiny_config(name, out, steps=STEPS, checkpoint_every=EVERY), resume=True)
    assert logged_losses(out) == logged_losses(straight_run)
    assert_checkpoint_equals_straight(out / "checkpoints" / "last.pt", straight_run, STEPS)
    shutil.rmtree(out)  # a ResNet-18 checkpoint is 140 MB: keep the suite's disk use small


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("name", METHODS)
def test_an_interrupt_in_any_phase_saves_a_whole_step_and_resumes_exactly(
    name, phase, tmp_path, straight
):
    _, saved_step = PHASES[phase]
    interrupted_then_resumed(name, phase, 1, tmp_path, straight[name], saved_step)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "saved_step"),
    [("forward", EVERY), ("optimizer-step", EVERY), ("checkpoint-write", SAVE_AT)],
)
def test_a_second_signal_stops_at_once_and_keeps_the_last_whole_checkpoint(
    phase, saved_step, tmp_path, straight
):
    """Twice in a step: the step is dropped and the periodic checkpoint before it stays; twice
    inside a write: the write finishes first (the file is whole, the run stops there)."""
    interrupted_then_resumed("densecl", phase, 2, tmp_path, straight["densecl"], saved_step)


@pytest.mark.slow
def test_ctrl_c_to_the_whole_process_group_with_loader_workers(tmp_path):
    """What a terminal's Ctrl-C does: SIGINT to the trainer and its data workers at once. The
    workers keep serving the step under way; the run ends with one line, exit code 130 and a
    checkpoint at its last logged step; resumed, it logs what a straight run logs."""
    import subprocess
    import sys
    import time

    from conftest import tiny_overrides

    def command(out):
        over = tiny_overrides(out, steps=12, **{"data.workers": 2, "device": "cpu"})
        return [sys.executable, "-m", "densessl.cli", "pretrain", "--method", "densecl", *over]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    split, straight_run = tmp_path / "split", tmp_path / "straight"
    job = subprocess.Popen(command(split), stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env=env)  # fmt: skip
    metrics = split / "metrics.jsonl"
    while job.poll() is None and (not metrics.exists() or len(metrics.read_text().split()) < 3):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGINT)
    stderr = job.communicate(timeout=120)[1]
    assert job.returncode == 130, stderr
    said = [line for line in stderr.splitlines() if "interrupted" in line or "Traceback" in line]
    assert len(said) == 1 and "interrupted at step" in said[0], stderr
    last_logged = logged_losses(split)[-1][0]
    assert load_checkpoint(split / "checkpoints" / "last.pt")["step"] == last_logged < 12
    resume = [sys.executable, "-m", "densessl.cli", "pretrain", "--out", str(split), "--resume"]
    subprocess.run(resume, check=True, capture_output=True, env=env)
    subprocess.run(command(straight_run), check=True, capture_output=True, env=env)
    assert logged_losses(split) == logged_losses(straight_run)


def test_loader_workers_leave_ctrl_c_to_the_trainer():
    """A worker killed by the terminal's SIGINT could not serve the batches of the step the
    trainer finishes before it saves: workers ignore SIGINT; SIGTERM they answer after a grace."""
    from densessl.engine.setup import _worker_init

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    try:
        _worker_init(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)


def _serve_forever(ready) -> None:
    from densessl.engine.interrupts import data_worker_signals

    data_worker_signals()
    ready.set()
    while True:
        time.sleep(0.01)


def test_a_worker_told_to_terminate_leaves_after_the_grace(monkeypatch):
    """Loaders, and Python at exit, end leftover workers with SIGTERM and then wait for them: a
    worker that ignored it would hang its parent forever. It leaves after the grace, with exit
    status 0 (which the loader does not report as a crash)."""
    import multiprocessing

    from densessl.engine import interrupts

    monkeypatch.setattr(interrupts, "WORKER_GRACE_SECONDS", 1)
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    worker = context.Process(target=_serve_forever, args=(ready,), daemon=True)
    worker.start()
    assert ready.wait(10)
    worker.terminate()
    time.sleep(0.3)
    assert worker.is_alive()  # still serving within the grace
    worker.join(10)
    alive = worker.is_alive()
    if alive:
        worker.kill()
    assert not alive and worker.exitcode == 0
