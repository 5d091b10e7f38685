"""A minimal DenseCL written from torchvision and plain torch, as a yardstick for densessl's.

What a reader of the paper (Wang et al., https://arxiv.org/abs/2011.09157) would write in one
sitting, in the reference's plain style: a ResNet trunk, MLP and 1x1-conv heads, a momentum
encoder, a queue of global keys and a queue of pooled dense keys, the argmax-matched dense
InfoNCE, logits built by concatenation and passed to cross-entropy, SGD with momentum. Nothing
here imports densessl; the benchmark feeds it the very views densessl's DenseCL gets.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class MinimalEncoder(nn.Module):
    """ResNet trunk -> (global projection (B, D), dense projection (B, D, h, w), C5)."""

    def __init__(self, arch: str, dim: int) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        self.trunk = nn.Sequential(*list(net.children())[:-2])  # up to C5
        channels = net.fc.in_features
        self.global_head = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, dim)
        )
        self.dense_head = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, dim, 1)
        )

    def forward(self, x: torch.Tensor):
        c5 = self.trunk(x)  # (B, C, h, w)
        return self.global_head(c5.mean(dim=(2, 3))), self.dense_head(c5), c5


def contrastive(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """InfoNCE as the reference computes it: [q·k | q·queueᵀ] / t, cross-entropy to index 0."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MinimalDenseCL(nn.Module):
    def __init__(
        self,
        arch: str = "resnet50",
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        lam: float = 0.5,
    ) -> None:
        super().__init__()
        self.student = MinimalEncoder(arch, dim)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("dense_queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.ptr = 0
        self.m, self.t, self.lam = momentum, temperature, lam

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        g_q, d_q, f_q = self.student(x_q)
        with torch.no_grad():
            g_k, d_k, f_k = self.teacher(x_k)
        q = F.normalize(g_q, dim=1)
        k = F.normalize(g_k, dim=1)
        r = F.normalize(d_q.flatten(2), dim=1)  # (B, D, N)
        t_dense = F.normalize(d_k.flatten(2), dim=1)
        pooled_k = F.normalize(d_k.mean(dim=(2, 3)), dim=1)
        with torch.no_grad():  # the key location most similar in backbone features
            sim = torch.einsum(
                "bcn,bcm->bnm",
                F.normalize(f_q.flatten(2), dim=1),
                F.normalize(f_k.flatten(2), dim=1),
            )
            match = sim.argmax(dim=2)  # (B, N)
        t_matched = torch.gather(t_dense, 2, match[:, None].expand(-1, t_dense.shape[1], -1))
        loss_g = contrastive(q, k, self.queue.clone().detach(), self.t)
        rows = r.transpose(1, 2).reshape(-1, r.shape[1])
        keys = t_matched.transpose(1, 2).reshape(-1, r.shape[1])
        loss_d = contrastive(rows, keys, self.dense_queue.clone().detach(), self.t)
        self._keys = (k, pooled_k)
        return (1 - self.lam) * loss_g + self.lam * loss_d

    @torch.no_grad()
    def after_step(self) -> None:
        for p_t, p_s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            p_t.mul_(self.m).add_(p_s.detach(), alpha=1 - self.m)
        k, pooled = self._keys
        rows = (torch.arange(k.shape[0]) + self.ptr) % self.queue.shape[0]
        self.queue[rows] = k
        self.dense_queue[rows] = pooled
        self.ptr = int((self.ptr + k.shape[0]) % self.queue.shape[0])


def minimal_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD as the reference: momentum 0.9, weight decay 1e-4 on every parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
