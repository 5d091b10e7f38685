"""Contrastive losses, as pure functions of tensors (no modules, no state, no collectives).

Every function takes already-gathered tensors: gathering keys across processes and keeping the
negative queue are the caller's business, so these can be tested against plain-loop references
in one process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """InfoNCE with one positive per row and a shared set of negatives (MoCo's loss).

    For each row i, with t the temperature::

        loss_i = -log( exp(q_i·k_i/t) / (exp(q_i·k_i/t) + Σ_j exp(q_i·n_j/t)) )

    and the result is the mean of loss_i over the M rows. It is computed as cross-entropy over the
    logits ``[q_i·k_i | q_i·Nᵀ] / t`` with target 0, which is the numerically stable form of the
    same quantity. With K = 0 negatives the only logit is the positive one, so the loss is 0.

    Args:
        q: (M, D) queries, L2-normalised; gradient flows through it.
        k: (M, D) positive keys, L2-normalised; normally detached (momentum encoder), but
            gradient is not blocked here.
        negatives: (K, D) negative keys, L2-normalised (e.g. ``NegativeQueue.negatives()``).
        temperature: t > 0; logits are divided by it.

    Returns:
        Scalar tensor: the mean loss over the M rows.

    Example:
        >>> q = F.normalize(torch.randn(8, 128), dim=1)
        >>> k = F.normalize(torch.randn(8, 128), dim=1)
        >>> queue = F.normalize(torch.randn(4096, 128), dim=1)
        >>> loss = info_nce(q, k, queue, temperature=0.2)
    """
    if negatives.shape[0] == 0:
        return (q * k).sum() * 0.0  # only the positive logit: -log(1) = 0, still in the graph
    return _QueueInfoNCE.apply(q, k, negatives, temperature)


class _QueueInfoNCE(torch.autograd.Function):
    """InfoNCE with one (M, K) buffer instead of the four that concat + cross-entropy allocate.

    With a 65536-key queue and DenseCL's M = B·S² query rows, the logit matrix dominates the
    loss's cost: 1568 × 65536 floats (392 MiB) per GPU in the paper setting. Forward writes the
    logits once and exponentiates them in place; backward is one matrix product with those
    exponentials, so the loss costs little more than its two matrix products (about 2x faster
    than the concat form on CPU, same values).
    Computed in float32 even under autocast: bf16 logits at τ = 0.2 lose too much.
    """

    @staticmethod
    def forward(ctx, q, k, negatives, temperature):
        with torch.autocast(device_type=q.device.type, enabled=False):
            dtype = torch.promote_types(q.dtype, torch.float32)
            q_scaled = q.to(dtype) / temperature  # (M, D), folds 1/τ into the small operand
            k, negatives = k.to(dtype), negatives.to(dtype)
            positive = (q_scaled * k).sum(dim=1)  # (M,)
            exp_neg = q_scaled @ negatives.t()  # (M, K) logits, exponentiated in place below
            shift = torch.maximum(exp_neg.amax(dim=1), positive)  # (M,) for stability
            exp_neg.sub_(shift[:, None]).exp_()
            exp_pos = torch.exp(positive - shift)  # (M,)
            denominator = exp_neg.sum(dim=1) + exp_pos
            loss = (shift + denominator.log() - positive).mean()
        ctx.save_for_backward(q_scaled, k, negatives, exp_neg, exp_pos, denominator)
        ctx.temperature, ctx.input_dtypes = temperature, (q.dtype, k.dtype, negatives.dtype)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q_scaled, k, negatives, exp_neg, exp_pos, denominator = ctx.saved_tensors
        with torch.autocast(device_type=q_scaled.device.type, enabled=False):
            scale = grad / q_scaled.shape[0] / denominator  # (M,) d(mean)/d(lse_i) / Z_i
            d_positive = exp_pos * scale - grad / q_scaled.shape[0]  # (M,) d loss / d(q·k/τ)
            # The softmax weights are exp_neg scaled per row; a per-row scale commutes with the
            # matrix products, so no (M, K) temporary is formed and backward can run twice.
            grad_q = grad_k = grad_negatives = None
            if ctx.needs_input_grad[0]:
                grad_q = scale[:, None] * (exp_neg @ negatives) + d_positive[:, None] * k
                grad_q = (grad_q / ctx.temperature).to(ctx.input_dtypes[0])
            if ctx.needs_input_grad[1]:
                grad_k = (d_positive[:, None] * q_scaled).to(ctx.input_dtypes[1])
            if ctx.needs_input_grad[2]:
                grad_negatives = exp_neg.t() @ (scale[:, None] * q_scaled)
                grad_negatives = grad_negatives.to(ctx.input_dtypes[2])
        return grad_q, grad_k, grad_negatives, None


@torch.no_grad()
def match_by_similarity(q_feat: torch.Tensor, k_feat: torch.Tensor) -> torch.Tensor:
    """For each query location, the key location of the same image with the highest cosine.

    ``index[b, i] = argmax_j cos(q_feat[b, i], k_feat[b, j])``: the direction is query -> key,
    and several query locations may pick the same key location (DenseCL does not require mutual
    nearest neighbours). Ties are broken by ``argmax`` (unspecified). The result is an integer
    index, so no gradient can flow through the matching.

    Args:
        q_feat: (B, Nq, C) query features (any scale; normalised here).
        k_feat: (B, Nk, C) key features (any scale; normalised here).

    Returns:
        (B, Nq) LongTensor of indices into the Nk key locations.

    Example:
        >>> q_feat = torch.randn(2, 49, 2048)
        >>> k_feat = torch.randn(2, 49, 2048)
        >>> match_by_similarity(q_feat, k_feat).shape
        torch.Size([2, 49])
    """
    q_unit = F.normalize(q_feat, dim=2)
    k_unit = F.normalize(k_feat, dim=2)
    similarity = torch.bmm(q_unit, k_unit.transpose(1, 2))  # (B, Nq, Nk)
    return similarity.argmax(dim=2)


def densecl_dense_loss(
    q_dense: torch.Tensor,
    k_dense: torch.Tensor,
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
) -> torch.Tensor:
    """DenseCL's dense term: InfoNCE per query location, positive found by feature matching.

    With j*(b, i) = ``match_by_similarity(q_feat, k_feat)[b, i]``::

        loss = 1/(B·N) Σ_b Σ_i -log( exp(r·t₊/t) / (exp(r·t₊/t) + Σ_j exp(r·n_j/t)) ),
        r = q_dense[b, i],  t₊ = k_dense[b, j*(b, i)],  n_j = negatives[j]

    i.e. the mean over all B·N query locations (the reference's CE over N·S² rows). Matching uses
    the backbone features (``q_feat``/``k_feat``), not the projections. Gradient flows only to
    ``q_dense``: the matching is an integer index and ``k_dense`` is detached here (it is expected
    to come from the momentum encoder, already without gradient).

    Args:
        q_dense: (B, N, D) query dense projections, L2-normalised per location.
        k_dense: (B, Nk, D) key dense projections, L2-normalised per location.
        q_feat: (B, N, C) query backbone features (raw; normalised inside, for matching only).
        k_feat: (B, Nk, C) key backbone features (raw; normalised inside, for matching only).
        negatives: (K, D) negatives, L2-normalised (DenseCL's dense queue of pooled key vectors).
        temperature: t > 0.

    Returns:
        Scalar tensor: the mean loss over the B·N query locations.

    Example:
        >>> q_dense = F.normalize(torch.randn(2, 49, 128), dim=2)
        >>> k_dense = F.normalize(torch.randn(2, 49, 128), dim=2)
        >>> q_feat, k_feat = torch.randn(2, 49, 2048), torch.randn(2, 49, 2048)
        >>> queue = F.normalize(torch.randn(4096, 128), dim=1)
        >>> loss = densecl_dense_loss(q_dense, k_dense, q_feat, k_feat, queue)
    """
    batch, locations, dim = q_dense.shape
    index = match_by_similarity(q_feat.detach(), k_feat.detach())  # (B, N)
    gather_index = index.unsqueeze(2).expand(batch, locations, dim)  # (B, N, D)
    matched_keys = torch.gather(k_dense.detach(), 1, gather_index)  # (B, N, D)
    return info_nce(
        q_dense.reshape(batch * locations, dim),
        matched_keys.reshape(batch * locations, dim),
        negatives,
        temperature,
    )
