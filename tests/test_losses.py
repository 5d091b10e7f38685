"""densessl.losses against plain-loop float64 references and closed forms."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from densessl.losses import densecl_dense_loss, info_nce
from densessl.models.matching import match_by_similarity

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference, whatever the import mode
from reference.plain_losses import (
    plain_densecl_dense_loss,
    plain_info_nce,
    plain_match,
)


def unit_rows(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def basis(index: int, dim: int) -> torch.Tensor:
    vector = torch.zeros(dim, dtype=torch.float64)
    vector[index] = 1.0
    return vector


# ---------------------------------------------------------------- info_nce


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("dim", [3, 16])
@pytest.mark.parametrize("num_negatives", [1, 7, 33])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_matches_loop_reference(rows, dim, num_negatives, temperature):
    q = unit_rows(rows, dim, seed=1)
    k = unit_rows(rows, dim, seed=2)
    negatives = unit_rows(num_negatives, dim, seed=3)
    got = info_nce(q, k, negatives, temperature)
    assert got.dim() == 0
    expected = plain_info_nce(q, k, negatives, temperature)
    assert got.item() == pytest.approx(expected, abs=1e-10, rel=0)


@pytest.mark.parametrize("num_negatives", [1, 16, 1000])
@pytest.mark.parametrize("temperature", [0.1, 0.2, 0.5])
def test_info_nce_closed_form_orthogonal_negatives(num_negatives, temperature):
    # q = k = e1, every negative = e2: positive logit 1/t, negative logits 0, so each row's loss
    # is -log(e^{1/t} / (e^{1/t} + K)) = log(1 + K e^{-1/t}).
    q = basis(0, 4).repeat(3, 1)
    negatives = basis(1, 4).repeat(num_negatives, 1)
    got = info_nce(q, q.clone(), negatives, temperature)
    expected = math.log1p(num_negatives * math.exp(-1.0 / temperature))
    assert got.item() == pytest.approx(expected, abs=1e-12, rel=0)


def test_info_nce_without_negatives_is_zero():
    q = unit_rows(4, 8, seed=0)
    k = unit_rows(4, 8, seed=1)
    got = info_nce(q, k, q.new_zeros(0, 8), 0.2)
    assert got.item() == pytest.approx(0.0, abs=1e-12)


def test_info_nce_large_logits_are_finite():
    # t = 0.01 makes logits of 100: a naive exp would overflow float32.
    q = unit_rows(4, 8, seed=0).float()
    got = info_nce(q, q.clone(), unit_rows(10, 8, seed=1).float(), 0.01)
    assert torch.isfinite(got)


def test_info_nce_gradcheck():
    q = unit_rows(3, 5, seed=0).requires_grad_()
    k = unit_rows(3, 5, seed=1).requires_grad_()
    negatives = unit_rows(4, 5, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: info_nce(a, b, c, 0.3), (q, k, negatives))


# ---------------------------------------------------------------- match_by_similarity


@pytest.mark.parametrize(("query_locations", "key_locations"), [(4, 4), (6, 3), (2, 9)])
def test_match_matches_loop_reference(query_locations, key_locations):
    generator = torch.Generator().manual_seed(0)
    q_feat = torch.randn(3, query_locations, 7, generator=generator, dtype=torch.float64)
    k_feat = torch.randn(3, key_locations, 7, generator=generator, dtype=torch.float64)
    got = match_by_similarity(q_feat, k_feat)
    assert got.shape == (3, query_locations)
    assert got.dtype == torch.long
    assert got.tolist() == plain_match(q_feat, k_feat)


def test_match_swapped_basis_vectors():
    # densecl.md section 6A: q_b = [e1, e2], k_b = [e2, e1] -> query 0 matches key 1 and vice versa.
    q_feat = torch.stack([basis(0, 2), basis(1, 2)]).unsqueeze(0)
    k_feat = torch.stack([basis(1, 2), basis(0, 2)]).unsqueeze(0)
    assert match_by_similarity(q_feat, k_feat).tolist() == [[1, 0]]


def test_match_uses_cosine_not_dot_product():
    generator = torch.Generator().manual_seed(3)
    q_feat = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    k_feat = torch.randn(2, 8, 6, generator=generator, dtype=torch.float64)
    # Positive per-location scales change dot products (and their argmax) but not cosines.
    q_scale = torch.rand(2, 5, 1, generator=generator, dtype=torch.float64) * 100 + 0.01
    k_scale = torch.rand(2, 8, 1, generator=generator, dtype=torch.float64) * 100 + 0.01
    assert torch.equal(
        match_by_similarity(q_feat * q_scale, k_feat * k_scale),
        match_by_similarity(q_feat, k_feat),
    )


def test_match_has_no_gradient():
    q_feat = torch.randn(1, 3, 4, requires_grad=True)
    k_feat = torch.randn(1, 3, 4, requires_grad=True)
    assert not match_by_similarity(q_feat, k_feat).requires_grad


# ---------------------------------------------------------------- densecl_dense_loss


def random_dense_inputs(locations: int = 6, key_locations: int = 6, seed: int = 0):
    batch, dim, channels = 2, 5, 7
    generator = torch.Generator().manual_seed(seed)
    q_dense = F.normalize(
        torch.randn(batch, locations, dim, generator=generator, dtype=torch.float64), dim=2
    )
    k_dense = F.normalize(
        torch.randn(batch, key_locations, dim, generator=generator, dtype=torch.float64), dim=2
    )
    q_feat = torch.randn(batch, locations, channels, generator=generator, dtype=torch.float64)
    k_feat = torch.randn(batch, key_locations, channels, generator=generator, dtype=torch.float64)
    negatives = unit_rows(11, dim, seed=seed + 100)
    return q_dense, k_dense, q_feat, k_feat, negatives


@pytest.mark.parametrize(("locations", "key_locations"), [(6, 6), (4, 9)])
@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_dense_loss_matches_loop_reference(locations, key_locations, temperature):
    inputs = random_dense_inputs(locations, key_locations)
    got = densecl_dense_loss(*inputs, temperature=temperature)
    expected = plain_densecl_dense_loss(*inputs, temperature)
    assert got.item() == pytest.approx(expected, abs=1e-10, rel=0)


def test_dense_loss_closed_form_from_densecl_notes():
    # densecl.md section 6A: 1 image, 2 locations; matching swaps the locations, each matched
    # projection pair has dot 1, the 16 negatives (all e3) are orthogonal -> log(1 + 16 e^{-5}).
    q_feat = torch.stack([basis(0, 2), basis(1, 2)]).unsqueeze(0)
    k_feat = torch.stack([basis(1, 2), basis(0, 2)]).unsqueeze(0)
    q_dense = torch.stack([basis(0, 3), basis(1, 3)]).unsqueeze(0)
    k_dense = torch.stack([basis(1, 3), basis(0, 3)]).unsqueeze(0)
    negatives = basis(2, 3).repeat(16, 1)
    got = densecl_dense_loss(q_dense, k_dense, q_feat, k_feat, negatives, temperature=0.2)
    expected = math.log1p(16 * math.exp(-5.0))
    assert expected == pytest.approx(0.102383, abs=1e-6)
    assert got.item() == pytest.approx(expected, abs=1e-12, rel=0)


def test_dense_loss_gradient_reaches_only_q_dense():
    q_dense, k_dense, q_feat, k_feat, negatives = random_dense_inputs()
    for tensor in (q_dense, k_dense, q_feat, k_feat):
        tensor.requires_grad_()
    densecl_dense_loss(q_dense, k_dense, q_feat, k_feat, negatives).backward()
    assert q_dense.grad is not None and q_dense.grad.abs().sum() > 0
    assert k_dense.grad is None
    assert q_feat.grad is None
    assert k_feat.grad is None


def test_dense_loss_gradcheck_wrt_q_dense():
    q_dense, k_dense, q_feat, k_feat, negatives = random_dense_inputs(3, 4)
    q_dense.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda r: densecl_dense_loss(r, k_dense, q_feat, k_feat, negatives, 0.3), (q_dense,)
    )
