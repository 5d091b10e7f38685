"""Shared fixtures: tiny configurations that keep every test within seconds on 2 CPU cores."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

# Under pytest-xdist (`make test`) every worker is a process of its own and takes one core: a
# second thread per worker would oversubscribe. DENSESSL_TEST_THREADS=1 keeps a serial run from
# fighting a benchmark for the two CI cores.
_default_threads = "1" if "PYTEST_XDIST_WORKER" in os.environ else "2"
torch.set_num_threads(int(os.environ.get("DENSESSL_TEST_THREADS", _default_threads)))

# Folder and shard listings go to a cache of the test session's own, not the user's, and the
# commands the tests start inherit it.
_CACHE = tempfile.TemporaryDirectory(prefix="densessl-test-cache-")
os.environ["DENSESSL_CACHE_DIR"] = _CACHE.name


@pytest.fixture(scope="module")
def module_tmp_path(tmp_path_factory, request):
    """A folder shared by one test module's fixtures, removed once the module is done.

    Pretraining runs hold checkpoints of a few hundred MB each: kept to the end of the session,
    the module fixtures alone would fill gigabytes of the temporary disk. A failing test's own
    ``tmp_path`` is still kept (``tmp_path_retention_policy = "failed"``)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tiny_overrides(out, steps: int = 3, **extra) -> list[str]:
    """A DenseCL/MoCo run small enough for a unit test: ResNet-18 at 64 px, batch 8, queue 16."""
    values = {
        "out": str(out),
        "backbone": "resnet18",
        "batch_size": 8,
        "steps": steps,
        "data.image_size": 64,
        "data.synthetic_images": 32,
        "data.synthetic_size": 80,
        "data.workers": 0,
        "method.queue_size": 16,
        "method.dim": 16,
        "method.hidden_dim": 32,
        "log_every": 1,
        "checkpoint_every": 1000,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_vit_overrides(out, method: str = "dino", steps: int = 2, **extra) -> list[str]:
    """A DINO/SelfPatch run for a unit test: 2-block ViT (width 48, patch 8), 48 px global and
    24 px local views (6x6 and 3x3 token grids), 2 local views, batch 4, 64/32-way heads."""
    values = {
        "out": str(out),
        "backbone": "vit_test_patch8",
        "batch_size": 4,
        "steps": steps,
        "data.image_size": 48,
        "data.synthetic_images": 16,
        "data.synthetic_size": 64,
        "data.workers": 0,
        "method.local_crops": 2,
        "method.local_crop_size": 24,
        "method.out_dim": 64,
        "method.hidden_dim": 32,
        "method.bottleneck_dim": 16,
        "log_every": 1,
        "checkpoint_every": 1000,
    }
    if method == "selfpatch":
        values["method.patch_out_dim"] = 32
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def state_at(method, step: int, total_steps: int = 10, steps_per_epoch: int = 4):
    """The StepState the engine passes ``method`` at ``step`` of a run of that length."""
    from densessl.engine.step import step_state
    from densessl.schedules import RunLength

    return step_state(step, method.schedules(), RunLength(total_steps, steps_per_epoch))


def tiny_vit_method(method: str, out, **extra):
    """A DINO/SelfPatch method built like the engine does, from :func:`tiny_vit_overrides`;
    :func:`state_at`'s default run (10 steps of 4 per epoch) is its schedule."""
    from densessl.config import build_config
    from densessl.methods import build_method, get_method

    cfg = build_config(get_method(method), overrides=tiny_vit_overrides(out, method, **extra))
    torch.manual_seed(0)
    return build_method(cfg)


def augmented_batch(method, n: int = 4):
    """The method's views of ``n`` built-in scenes, collated and augmented like a train step."""
    from densessl.data.batch import collate_views
    from densessl.data.batch_augment import augment_batch
    from densessl.data.pretrain import MultiViewDataset
    from densessl.data.synthetic import SyntheticScenes
    from densessl.data.views import MultiViewTransform

    dataset = MultiViewDataset(
        SyntheticScenes(num_images=n, image_size=64), MultiViewTransform(method.view_specs()), 0
    )
    return augment_batch(collate_views([dataset[(0, i)] for i in range(n)]))


@pytest.fixture
def tiny():
    return tiny_overrides


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_target_moves_only_by_ema(method, batch, step: int, tau_base: float, total_steps: int):
    """One optimizer step must leave a BYOL-style target untouched; ``after_step`` must then
    move it to τ·ξ + (1 − τ)·θ with τ = 1 − (1 − τ_base)·(cos(π·(step + 1)/K) + 1)/2, the
    value for the next step (the target that step uses)."""
    import copy
    import math

    before = copy.deepcopy(method.teacher.state_dict())
    state = state_at(method, step, total_steps)
    method(batch, state).loss.backward()
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    for name, value in method.teacher.named_parameters():  # the optimizer never touches it
        assert torch.equal(value, before[name]), name
    method.after_step(state)
    tau = 1 - (1 - tau_base) * (math.cos(math.pi * (step + 1) / total_steps) + 1) / 2
    assert state.teacher_momentum == pytest.approx(tau)
    pairs = zip(method.teacher.named_parameters(), method.student.parameters(), strict=True)
    for (name, t), s in pairs:
        torch.testing.assert_close(t, tau * before[name] + (1 - tau) * s.detach())


def write_scene_folder(folder, num_images: int, image_size: int, seed: int):
    """A plain folder of built-in scene PNGs (``scene_{i}.png``), as a user's image folder."""
    from densessl.data.synthetic import SyntheticScenes

    folder.mkdir(parents=True, exist_ok=True)
    scenes = SyntheticScenes(num_images=num_images, image_size=image_size, seed=seed)
    for i in range(num_images):
        scenes.load_image(i).save(folder / f"scene_{i}.png")
    return folder


# A SoCo / MCL run small enough for a unit test: ResNet-18 at 64 px, 16-channel FPN and head convs.
TINY_FPN_RUN = {
    "backbone": "resnet18",
    "batch_size": 4,
    "data.image_size": 64,
    "data.synthetic_images": 8,
    "data.synthetic_size": 80,
    "data.workers": 0,
    "method.hidden_dim": 32,
    "method.dim": 16,
    "method.fpn_channels": 16,
    "method.head_channels": 16,
    "log_every": 1,
    "checkpoint_every": 1000,
}


def v2_detector_states(weights: dict, also_missing: tuple[str, ...] = ()) -> list[dict]:
    """Load a ``torchvision_detection`` export into torchvision's ``fasterrcnn_resnet50_fpn_v2``
    and ``maskrcnn_resnet50_fpn_v2`` (nothing downloaded); assert that exactly the RPN head, the
    predictors, the mask branch and the ``also_missing`` prefixes stay unfilled and nothing is
    unexpected. Returns both models' state dicts, to compare tensors."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2, maskrcnn_resnet50_fpn_v2

    mask_branch = ("roi_heads.mask_head.", "roi_heads.mask_predictor.")
    states = []
    for build, extra in ((fasterrcnn_resnet50_fpn_v2, ()), (maskrcnn_resnet50_fpn_v2, mask_branch)):
        model = build(weights=None, weights_backbone=None, num_classes=3)
        # BN fills an absent num_batches_tracked itself, so torch never reports it missing.
        expected_missing = {
            k for k in model.state_dict()
            if k.startswith(("rpn.head.", "roi_heads.box_predictor.", *extra, *also_missing))
            and not k.endswith("num_batches_tracked")
        }  # fmt: skip
        outcome = model.load_state_dict(weights, strict=False)
        assert set(outcome.missing_keys) == expected_missing
        assert outcome.unexpected_keys == []
        states.append(model.state_dict())
    return states


def tree_state(root) -> dict[str, tuple]:
    """Everything under ``root`` a refused command must leave alone: each entry's kind, mode
    and content (file bytes' hash, link target), by relative path."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        info = path.lstat()
        if path.is_symlink():
            state[key] = ("link", os.readlink(path))
        elif path.is_dir():
            state[key] = ("dir", info.st_mode)
        elif path.is_file():
            state[key] = ("file", info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[key] = ("other", info.st_mode)
    return state


def refused(capsys, argv: list[str], root) -> str:
    """Run the CLI on a command it must refuse: exit code 2, one stderr line, no traceback,
    nothing on stdout, and ``root`` (the test's whole tree) byte for byte as it was. Returns
    the line."""
    from densessl.cli import main

    before = tree_state(root)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert captured.out == "", captured.out
    assert len(lines) == 1, err
    assert lines[0].startswith("densessl: error: ") and "Traceback" not in err, err
    assert tree_state(root) == before, "a refused command changed the files"
    return lines[0]
