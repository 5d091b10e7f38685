"""Every method learns: on one fixed batch of 4 scenes, a few optimizer steps lower its loss.

Each step runs like the engine's: forward with the step's scheduled state, backward, the gradients
of frozen parameters dropped, an Adam step on the student (and predictors), then ``after_step``
(EMA teacher, queues, centres). A method whose gradient never reaches its student, or reaches it
with the wrong sign, or whose teacher and queues drift away from what it learns, fails here.

A few settings make each loss a fixed objective over so few steps, so that falling means
learning:
- MoCo-v2 and DenseCL use a queue of 4096 random keys: with the golden run's 16, the batch's own
  keys soon fill the queue and the loss rises by construction.
- DINO and SelfPatch keep their centre at 0 and τ_t constant, and run without stochastic depth:
  centring and the τ_t warm-up raise the target's entropy, and so the loss, on purpose.
- Every step draws the same randomness (MCL's montages).
"""

from __future__ import annotations

import pytest
import torch

from densessl.engine.step import bare_step
from densessl.registry import METHODS

from conftest import state_at
from tiny_methods import tiny_batch, tiny_method, where_config_has

STEPS, LR = 8, 1e-3
# Settings that make each loss a fixed objective, applied to every method whose config has them.
FIXED = {
    "queue_size": 4096,
    "drop_path_rate": 0.0,
    "center_momentum": 1.0,
    "warmup_teacher_temp_epochs": 0,
}
MARGIN = 0.2  # every loss here starts at O(1); a fixed batch leaves no noise between steps


@pytest.mark.parametrize("name", METHODS.names())
def test_the_loss_falls_on_a_fixed_batch(name, tmp_path):
    steps, lr = STEPS, LR
    method, cfg = tiny_method(name, tmp_path, **where_config_has(name, FIXED))
    batch = tiny_batch(method, cfg)
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        state = state_at(method, step, total_steps=steps, steps_per_epoch=2)
        torch.manual_seed(0)
        losses.append(bare_step(method, batch, state, optimizer).item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - MARGIN, losses
