"""PixPro's pieces against the paper's formulas: the crop coordinates of the reference's
transforms, the positive pixel pairs (closed forms for identical, mirrored and disjoint crops,
plain loops otherwise), the pixel propagation module and the consistency loss (plain loops in
``tests/reference/plain_pixpro.py``), and the instance branch."""

from __future__ import annotations

import pytest
import torch

from densessl.losses import pixpro_loss
from densessl.models.pixel_pairs import crop_coordinates, positive_pairs
from densessl.models.propagation import PixelPropagation

from conftest import state_at
from reference.plain_pixpro import (
    plain_coords,
    plain_pairs,
    plain_pixpro_loss,
    plain_propagation,
)
from tiny_methods import tiny_batch, tiny_method

SQUARE = torch.tensor([[10.0, 10.0, 74.0, 74.0]])  # a 64-px crop of a 101 x 101 image
SIZE = torch.tensor([[101, 101]])


def coords(box: torch.Tensor, flipped: bool, size: torch.Tensor = SIZE) -> torch.Tensor:
    return crop_coordinates(box, torch.tensor([flipped]), size)


def random_boxes(generator: torch.Generator, n: int, height: int, width: int) -> torch.Tensor:
    x0 = torch.randint(0, width // 2, (n,), generator=generator)
    y0 = torch.randint(0, height // 2, (n,), generator=generator)
    x1 = x0 + torch.randint(8, width // 2, (n,), generator=generator)
    y1 = y0 + torch.randint(8, height // 2, (n,), generator=generator)
    return torch.stack([x0, y0, x1, y1], dim=-1).float()


def test_crop_coordinates_are_the_reference_transforms():
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 6, 81, 121)
    flipped = torch.tensor([False, True, False, True, True, False])
    got = crop_coordinates(boxes, flipped, torch.tensor([[81, 121]] * 6))
    for box, flip, row in zip(boxes.tolist(), flipped.tolist(), got.tolist(), strict=True):
        assert row == pytest.approx(plain_coords(box, flip, 81, 121), abs=1e-6)


def test_identical_crops_pair_each_pixel_with_itself_only():
    """Neighbouring bins of a square grid are 1/√2 ≈ 0.707 diagonals apart: over T = 0.7."""
    c = coords(SQUARE, False)
    assert torch.equal(positive_pairs(c, c, (5, 5), (5, 5), 0.7)[0], torch.eye(25))
    assert positive_pairs(c, c, (5, 5), (5, 5), 0.71)[0].sum(dim=1).min() >= 3  # neighbours in


def test_a_mirrored_crop_pairs_each_pixel_with_its_mirror_image():
    pairs = positive_pairs(coords(SQUARE, False), coords(SQUARE, True), (4, 4), (4, 4), 0.7)[0]
    mirror = torch.zeros(16, 16)
    for row in range(4):
        for col in range(4):
            mirror[row * 4 + col, row * 4 + 3 - col] = 1
    assert torch.equal(pairs, mirror)


def test_disjoint_crops_have_no_pairs_and_add_nothing_to_the_loss():
    left, right = torch.tensor([[0.0, 0.0, 40.0, 40.0]]), torch.tensor([[60.0, 0.0, 100.0, 40.0]])
    pairs = positive_pairs(coords(left, False), coords(right, False), (4, 4), (4, 4), 0.7)
    assert pairs.sum() == 0
    assert pixpro_loss(torch.randn(1, 16, 8), torch.randn(1, 16, 8), pairs) == 0


def test_pairs_of_random_crops_and_grids_are_the_plain_loops():
    generator = torch.Generator().manual_seed(1)
    size = torch.tensor([[90, 130]] * 4)
    cq = crop_coordinates(
        random_boxes(generator, 4, 90, 130), torch.tensor([0, 1, 0, 1]).bool(), size
    )
    ck = crop_coordinates(
        random_boxes(generator, 4, 90, 130), torch.tensor([0, 0, 1, 1]).bool(), size
    )
    got = positive_pairs(cq, ck, (4, 5), (3, 3), 0.7)
    for b in range(4):
        want = plain_pairs(cq[b].tolist(), ck[b].tolist(), 4, 5, 3, 3, 0.7)
        assert got[b].tolist() == want, b
    assert 0 < got.sum() < got.numel()  # the crops overlap in part


@pytest.mark.parametrize("transform_layers", [0, 1])
def test_propagation_is_the_plain_loop(transform_layers):
    torch.manual_seed(0)
    ppm = PixelPropagation(6, transform_layers, gamma=2.0).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    got = ppm(x)
    values = ppm.transform(x)
    for b in range(2):
        pixels = x[b].flatten(1).T.tolist()  # (N, D)
        want = plain_propagation(pixels, values[b].flatten(1).T.tolist(), 2.0)
        torch.testing.assert_close(got[b].flatten(1).T, torch.tensor(want, dtype=torch.float64))


def test_the_loss_is_the_plain_loop():
    torch.manual_seed(0)
    pred, target = (
        torch.randn(3, 6, 5, dtype=torch.float64),
        torch.randn(3, 8, 5, dtype=torch.float64),
    )
    pairs = (torch.rand(3, 6, 8) < 0.3).double()
    pairs[2] = 0  # an image without pairs
    want = plain_pixpro_loss(pred.tolist(), target.tolist(), pairs.tolist())
    assert pixpro_loss(pred, target, pairs).item() == pytest.approx(want, rel=1e-9)


def test_the_instance_branch_is_built_and_weighed_only_when_asked(tmp_path):
    alone, cfg = tiny_method("pixpro", tmp_path)
    assert not hasattr(alone.student, "instance_projector") and not hasattr(alone, "predictor")
    assert set(alone(tiny_batch(alone, cfg), state_at(alone, 0)).logs) == {"loss_pixel"}
    both, cfg = tiny_method("pixpro", tmp_path, **{"method.instance_weight": 0.5})
    out = both(tiny_batch(both, cfg), state_at(both, 0))
    assert out.loss.item() == pytest.approx(
        (out.logs["loss_pixel"] + 0.5 * out.logs["loss_instance"]).item(), rel=1e-6
    )
