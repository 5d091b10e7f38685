"""Self-supervised losses, as pure functions of tensors (no modules, no state, no collectives).

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


def dino_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation cross-entropy, with the teacher centred and sharpened.

    With q = softmax((teacher - center) / teacher_temp) and log p = log_softmax(student /
    student_temp), both over the K outputs of each row::

        loss = 1/B Σ_b Σ_k −q[b, k] · log p[b, k]

    No gradient reaches the teacher or the centre. Computed in float32 at least (a 0.04
    temperature in bf16 loses most of the distribution).

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K), same rows (another view of the same images, or the same view).
        center: (K,) or (1, K), the running mean of teacher logits.
        student_temp: τ_s (DINO: 0.1).
        teacher_temp: τ_t (DINO: 0.04 -> 0.07, SelfPatch: 0.04).

    Returns:
        Scalar tensor: the mean over the B rows.

    Example:
        >>> s, t = torch.randn(8, 64), torch.randn(8, 64)
        >>> loss = dino_loss(s, t, torch.zeros(64), 0.1, 0.04)
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    target = F.softmax((teacher_logits.detach().to(dtype) - center.to(dtype)) / teacher_temp, -1)
    log_prob = F.log_softmax(student_logits.to(dtype) / student_temp, dim=-1)
    return -(target * log_prob).sum(dim=-1).mean()


BORDERS = ("wrap", "clamp")
_NEIGHBOUR_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def neighbour_table(grid: tuple[int, int], border: str) -> torch.Tensor:
    """The 3x3-window neighbours of every cell of an (h, w) grid, the cell itself excluded.

    Cells are numbered row-major (``i = r * w + c``). Column j of row i is the cell at offset
    ``(dr, dc)``, offsets in the order (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0),
    (1,1). ``border="wrap"`` takes offsets modulo the grid (the grid is a torus, as in the
    SelfPatch code); ``"clamp"`` marks offsets outside the grid with -1. A neighbour reached twice
    (wrap on a side shorter than 3) or equal to the cell itself is also -1, so every row lists
    distinct other cells.

    Returns:
        (h*w, 8) int64 on the CPU (cached per grid and border; do not modify).
    """
    h, w = (int(v) for v in grid)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {', '.join(BORDERS)}, not {border!r}")
    key = (h, w, border)
    if key not in _NEIGHBOUR_TABLES:
        offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
        table = torch.full((h * w, len(offsets)), -1, dtype=torch.int64)
        for r in range(h):
            for c in range(w):
                seen = {r * w + c}
                for j, (dr, dc) in enumerate(offsets):
                    rr, cc = r + dr, c + dc
                    if border == "wrap":
                        rr, cc = rr % h, cc % w
                    elif not (0 <= rr < h and 0 <= cc < w):
                        continue
                    if rr * w + cc not in seen:
                        seen.add(rr * w + cc)
                        table[r * w + c, j] = rr * w + cc
        _NEIGHBOUR_TABLES[key] = table
    return _NEIGHBOUR_TABLES[key]


@torch.no_grad()
def selfpatch_neighbors(
    tokens: torch.Tensor, grid: tuple[int, int], k: int = 4, border: str = "wrap"
) -> torch.Tensor:
    """For each patch, its k most similar neighbours in the 3x3 window (itself excluded).

    Similarity is the cosine between the patch's token and each candidate's token (SelfPatch
    uses the teacher's last-block tokens). Candidates come from :func:`neighbour_table`; with
    ``border="clamp"`` a border patch has fewer than 8 (3 in a corner), and the top-k is taken
    over those. Where fewer than k candidates exist the remaining slots hold -1.

    Args:
        tokens: (B, N, D) patch tokens, N = h*w in row-major order.
        grid: (h, w).
        k: neighbours to keep (SelfPatch: 4), 1 <= k <= 8.
        border: "wrap" or "clamp" (see :func:`neighbour_table`).

    Returns:
        (B, N, k) int64 indices into N, most similar first; -1 marks an empty slot.

    Example:
        >>> tokens = torch.randn(2, 14 * 14, 384)
        >>> selfpatch_neighbors(tokens, (14, 14), k=4, border="wrap").shape
        torch.Size([2, 196, 4])
    """
    batch, n, _ = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    if not 1 <= k <= 8:
        raise ValueError(f"k must be between 1 and 8, not {k}")
    table = neighbour_table(grid, border).to(tokens.device)  # (N, 8)
    unit = F.normalize(tokens.float(), dim=-1)
    # All pairwise cosines then a gather: B·N² values instead of B·N·8·D gathered features.
    similarity = torch.bmm(unit, unit.transpose(1, 2))  # (B, N, N)
    candidates = similarity.gather(2, table.clamp(min=0).expand(batch, n, -1))  # (B, N, 8)
    candidates = candidates.masked_fill(table < 0, float("-inf"))
    best, slot = candidates.topk(k, dim=2)  # (B, N, k), most similar first
    index = table.expand(batch, n, -1).gather(2, slot)
    return index.masked_fill(best == float("-inf"), -1)


def byol_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised mean squared error, the mean of 2 − 2·cos over the rows.

    For each row i, with p̂ = p/‖p‖ and ẑ = z/‖z‖::

        loss_i = ‖p̂_i − ẑ_i‖² = 2 − 2·⟨p̂_i, ẑ_i⟩

    Both inputs are L2-normalised here; no gradient reaches ``target``. Computed in float32 at
    least.

    Args:
        pred: (M, D) online predictions.
        target: (M, D) target projections of the other view (same row order).

    Returns:
        Scalar tensor: the mean of loss_i over the M rows, in [0, 4].

    Example:
        >>> p, z = torch.randn(8, 256), torch.randn(8, 256)
        >>> loss = byol_loss(p, z) + byol_loss(z, p)  # BYOL's symmetric loss, roles swapped
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    z = F.normalize(target.detach().to(dtype), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def box_pair_loss(
    pred: torch.Tensor, target: torch.Tensor, pred_ids: torch.Tensor, target_ids: torch.Tensor
) -> torch.Tensor:
    """SoCo's object-level loss: −2 × the mean cosine over matched boxes, averaged per image.

    Box slot i of one view and slot j of the other match when they hold the same proposal
    (``pred_ids[n, i] == target_ids[n, j]``); padding duplicates a proposal, so one slot can match
    several. With C[n, i, j] the match indicator::

        loss = −2 · 1/N Σ_n [ Σ_ij C[n,i,j]·⟨p̂_ni, ẑ_nj⟩ / (Σ_ij C[n,i,j] + 1e−6) ]

    which is the reference's ``regression_loss_bboxs_aware`` restricted to each box's assigned
    pyramid level (other (box, level) slots never match there). Without duplicates it equals
    ``byol_loss(p, z) − 2`` over the matched rows.

    Args:
        pred: (N, K, D) online predictions of the K box slots of each image.
        target: (N, K, D) target projections of the other view's K slots (no gradient).
        pred_ids: (N, K) integer proposal id of every prediction slot.
        target_ids: (N, K) integer proposal id of every target slot.

    Returns:
        Scalar tensor in [−2, 2].
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    z = F.normalize(target.detach().to(dtype), dim=-1)
    similarity = torch.bmm(p, z.transpose(1, 2))  # (N, K, K)
    matches = (pred_ids[:, :, None] == target_ids[:, None, :]).to(dtype)  # (N, K, K)
    per_image = (similarity * matches).sum(dim=(1, 2)) / (matches.sum(dim=(1, 2)) + 1e-6)
    return -2 * per_image.mean()


def mcl_cell_loss(
    pred: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """MCL's loss for one level and branch: each montage cell must pick its source image's
    full-view target among all targets.

    With p̂_c = p_c/‖p_c‖ and T the temperature::

        loss_c = −log( exp(⟨p̂_c, z_{y_c}⟩/T) / Σ_m exp(⟨p̂_c, z_m⟩/T) )
        loss   = 2T · mean_c loss_c

    the reference's ``LatentMultiPredictContrastHead`` (cross-entropy over the logits, scaled by
    2T so that at T = 1 the positive term is BYOL's −2·cos). The level weight is the caller's.

    Args:
        pred: (n, D) online predictions of n cells (normalised here).
        targets: (N, D) L2-normalised full-view targets of the other branch, already gathered
            from every process; no gradient reaches them.
        labels: (n,) long, index into ``targets`` of each cell's source image.
        temperature: T (reference: 1.0).

    Returns:
        Scalar tensor, computed in float32 at least.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p = F.normalize(pred.to(dtype), dim=-1)
    logits = p @ targets.detach().to(dtype).t() / temperature  # (n, N)
    return F.cross_entropy(logits, labels) * (2 * temperature)
