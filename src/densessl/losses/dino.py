"""DINO's self-distillation cross-entropy (Caron et al., https://arxiv.org/abs/2104.14294),
also SelfPatch's patch-level loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation cross-entropy, with the teacher centred and sharpened::

        q = softmax((teacher - center) / teacher_temp), log p = log_softmax(student / student_temp)
        loss = 1/B Σ_b Σ_k −q[b, k] · log p[b, k]

    No gradient reaches the teacher or the centre. Float32 with autocast off (a 0.04 temperature
    in bf16 loses most of the distribution).

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K), same rows (another view of the same images, or the same view).
        center: (K,) or (1, K), the running mean of teacher logits.
        teacher_temp: τ_t (DINO: 0.04 -> 0.07, SelfPatch: 0.04); ``student_temp`` τ_s (0.1).
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    # Autocast off: both softmaxes stay in float32 (or float64) whatever the enclosing context.
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        teacher = teacher_logits.detach().to(dtype) - center.to(dtype)
        target = F.softmax(teacher / teacher_temp, dim=-1)
        log_prob = F.log_softmax(student_logits.to(dtype) / student_temp, dim=-1)
        return -(target * log_prob).sum(dim=-1).mean()


def cross_view_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO's multi-crop loss: mean of :func:`dino_loss` over every (teacher view a, student
    view b ≠ a) pair; ``student`` V tensors (B, K), ``teacher`` the first T ≤ V views (the
    global ones), ``center`` (1, K)."""
    terms = [
        dino_loss(s, t, center, student_temp, teacher_temp)
        for a, t in enumerate(teacher)
        for b, s in enumerate(student)
        if a != b
    ]
    return torch.stack(terms).mean()
