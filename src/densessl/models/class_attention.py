"""Class attention (CaiT): a learnable query token reads a set of tokens; the set is not updated.

SelfPatch's :class:`TokenAggregator` summarises a view's patches (image token) and each patch's
neighbours (its target). Letters: M sets, L tokens per set, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassAttentionBlock(nn.Module):
    """One pre-norm block that updates only the query token.

    ``u = LN1([query; tokens])``; attention with the query from ``u[0]`` and keys and values from
    all of ``u``; ``query += proj(attn)``; ``query += MLP(LN2(query))`` (hidden ``mlp_ratio``·D).
    No LayerScale, dropout or drop-path (SelfPatch's settings).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(M, L, D) -> (M, heads, L, D / heads)."""
        m, length, dim = x.shape
        return x.reshape(m, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Update (M, 1, D) ``query`` tokens from (M, L, D) ``tokens``; returns (M, 1, D).

        Args:
            valid: optional (M, L) bool; False entries are masked out of the softmax (the query
                itself always counts, so no row is fully masked).
        """
        m, _, dim = query.shape
        u = self.norm1(torch.cat([query, tokens], dim=1))  # (M, 1 + L, D)
        mask = None
        if valid is not None:
            keep_query = torch.ones_like(valid[:, :1])
            mask = torch.cat([keep_query, valid], dim=1)[:, None, None, :]  # (M, 1, 1, 1 + L)
        attended = F.scaled_dot_product_attention(
            self._heads(self.q(u[:, :1])), self._heads(self.k(u)), self._heads(self.v(u)), mask
        )  # (M, heads, 1, D / heads)
        query = query + self.proj(attended.transpose(1, 2).reshape(m, 1, dim))
        return query + self.mlp(self.norm2(query))


class TokenAggregator(nn.Module):
    """A learnable query token, ``depth`` class-attention blocks (SelfPatch: 2) and a final
    LayerNorm; ``dim`` D, ``num_heads`` the backbone's."""

    def __init__(self, dim: int, num_heads: int, depth: int = 2) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.query, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def summarise(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """One summary token per set: tokens (M, L, D), optional valid (M, L) bool -> (M, D),
        after the final LayerNorm."""
        query = self.query.expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            query = block(query, tokens, valid)
        return self.norm(query[:, 0])
