"""DDP for every registered method: two gloo processes, each holding half of every batch, train
exactly like one process holding the whole batch, through the real engine (sampler slices,
DDP gradient averaging, synchronised BN, gathered keys, queues and centres).

Both processes run in one ``mp.spawn`` for the whole registry (a spawn costs seconds; a step of
a tiny method a fraction of one). ``batch_norm=sync`` everywhere: MoCo-v2's and DenseCL's default
shuffle-BN is skipped in one process by design (it is the identity there), so with it two
processes would normalise keys over other images than one process does; synchronised BN
normalises over the same global batch in both. Shuffle-BN itself is checked in
``test_shuffle_bn.py``.

One timm CNN runs as well (DenseCL on RegNetY-200MF): timm fuses BN and activation in its own
``BatchNormAct2d``, which must become synchronised BN and still average like torchvision's BN.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densessl.registry import METHODS

from engine_harness import engine_steps, in_processes, tiny_config
from tiny_methods import where_config_has
from tiny_timm import tiny_timm_name

pytestmark = pytest.mark.dist

STEPS = 1
# case -> (method, extra overrides): every method on its golden-record backbone, plus a timm CNN.
CASES = {name: (name, {}) for name in METHODS.names()}
CASES["densecl-timm_regnety_002"] = ("densecl", {"backbone": tiny_timm_name("regnety_002")})


# Randomness a process draws for its own images, by design, which no two-process run can share
# with one process: DINO's and SelfPatch's stochastic depth (each process drops its own paths)
# and MCL's montages (each process tiles its own images, as the reference does, from the global
# generator). Off here; MCL keeps level 0 (the full views), so its cross-process negatives, the
# gathered targets, are still checked.
PROCESS_LOCAL_RANDOMNESS = {"drop_path_rate": 0.0, "levels": 1}


def run_config(case: str, out: Path):
    name, extra = CASES[case]
    extra = {**where_config_has(name, PROCESS_LOCAL_RANDOMNESS), **extra}
    return tiny_config(name, out, batch_norm="sync", steps=STEPS, **extra)


def _every_method(rank: int, root: str) -> None:
    for case in CASES:
        out = Path(root) / case
        result = engine_steps(run_config(case, out), STEPS)
        if rank == 0:
            torch.save(result.__dict__, out / "two_processes.pt")


@pytest.fixture(scope="module")
def two_processes(module_tmp_path) -> Path:
    root = module_tmp_path
    in_processes(_every_method, str(root))
    return root


def assert_close_in_norm(got: dict, want: dict, rel: float, floor: float) -> None:
    """‖got − want‖ ≤ rel·(‖want‖ + floor) for every tensor. In norm, not per element: the
    processes sum in another order, and a few BN layers over 2-4 samples (BYOL's c5 is 2×2)
    amplify float32 rounding to about 2% of a gradient, while a wiring error moves it by ~100%.
    ``floor`` covers tensors that are zero but for rounding (a Linear bias before a BN)."""
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.isfinite(value).all(), key
        error = torch.linalg.vector_norm((got[key] - value).double())
        bound = rel * (torch.linalg.vector_norm(value.double()) + floor)
        assert error <= bound, (key, float(error), float(bound))


@pytest.mark.parametrize("case", CASES)
def test_two_processes_equal_one_on_the_concatenated_batch(case, two_processes, tmp_path):
    two = torch.load(two_processes / case / "two_processes.pt", weights_only=False)
    one = engine_steps(run_config(case, tmp_path), STEPS)
    assert all(torch.isfinite(torch.tensor(loss)) for loss in one.losses)
    assert two["losses"] == pytest.approx(one.losses, rel=1e-4, abs=1e-5)
    for grads_two, grads_one in zip(two["grads"], one.grads, strict=True):
        scale = float(
            torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads_one.values()]))
        )
        assert scale > 0
        assert_close_in_norm(grads_two, grads_one, rel=5e-2, floor=1e-4 * scale)
    # After the step: the teacher (EMA), queues (gathered keys), centres (all-reduced), BN
    # statistics (synchronised).
    floats = {k: v for k, v in one.state.items() if v.is_floating_point()}
    assert_close_in_norm({k: two["state"][k] for k in floats}, floats, rel=1e-2, floor=1e-3)
    for key, value in one.state.items():  # queue pointers, BN counters
        if not value.is_floating_point():
            assert torch.equal(two["state"][key], value), key
