"""MoCo's InfoNCE (He et al., https://arxiv.org/abs/1911.05722): one positive per row against
a shared set of negatives. Also DenseCL's global term, and its dense term once matched.
"""

from __future__ import annotations

import torch


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """InfoNCE with one positive per row and a shared set of negatives (MoCo's loss)::

        loss_i = -log( exp(q_i·k_i/t) / (exp(q_i·k_i/t) + Σ_j exp(q_i·n_j/t)) )

    averaged over the M rows, computed stably as cross-entropy over ``[q_i·k_i | q_i·Nᵀ] / t``
    with target 0; 0 when K = 0.

    Args:
        q: (M, D) queries, L2-normalised.
        k: (M, D) positive keys, L2-normalised (normally detached; not blocked here).
        negatives: (K, D) negative keys, L2-normalised (e.g. ``NegativeQueue.negatives()``).
    """
    if negatives.shape[0] == 0:
        return (q * k).sum() * 0.0  # only the positive logit: -log(1) = 0, still in the graph
    return _QueueInfoNCE.apply(q, k, negatives, temperature)


class _QueueInfoNCE(torch.autograd.Function):
    """InfoNCE with one (M, K) buffer instead of the four that concat + cross-entropy allocate,
    since the logits dominate with a 65536-key queue and DenseCL's M = B·S² rows. Forward
    exponentiates the logits in place; backward is one matrix product with them. Float32 even
    under autocast: bf16 logits at τ = 0.2 lose too much.
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
