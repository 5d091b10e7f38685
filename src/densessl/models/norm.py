"""Batch norm synchronised across processes that also runs on CPU (gloo), plus a converter.

``nn.SyncBatchNorm`` accepts only CUDA tensors; :class:`GlobalBatchNorm2d` reduces the statistics
with differentiable all-reduces (:mod:`densessl.dist`) on any device and is exactly
``nn.BatchNorm2d`` in one process. On GPU ``convert_batchnorm(m, "torch_sync")`` is faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, convert_sync_batchnorm
from torch import nn

from densessl import dist

_MODES = ("bn", "sync", "torch_sync")


class _GlobalBatchNormMixin:
    """Training-mode statistics over the batch of all processes (shared by the 1d/2d classes)."""

    def forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        # Same rule as nn.BatchNorm: batch statistics in training, or when no running stats exist.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )

        channel_shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast (C,) over (B, C, ...)
        reduce_dims = [0, *range(2, x.dim())]
        # Half-precision sums over millions of values lose too much; accumulate in float32+.
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        xs = x.to(stats_dtype)
        local_count = x.numel() // x.shape[1]
        count_column = xs.new_full((1,), float(local_count))
        # Two passes (mean, then centred squares) rather than E[x²] - mean², which cancels
        # catastrophically in float32 when |mean| >> std; costs one extra small all-reduce.
        sums = dist.all_reduce_sum_with_grad(torch.cat([xs.sum(reduce_dims), count_column]))
        count = sums[-1]
        mean = sums[:-1] / count  # (C,)
        centred = xs - mean.view(channel_shape)
        sum_squares = dist.all_reduce_sum_with_grad(centred.square().sum(reduce_dims))
        total = int(count.item())
        if total <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {total}")
        var = sum_squares / count  # biased, used for normalisation (as BatchNorm)

        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * total / (total - 1))

        inv_std = torch.rsqrt(var + self.eps)
        y = centred * inv_std.view(channel_shape)
        if self.affine:
            y = y * self.weight.view(channel_shape) + self.bias.view(channel_shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(
        self: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, unbiased_var: torch.Tensor
    ) -> None:
        # Mirrors nn.BatchNorm: momentum=None means a cumulative average over batches seen.
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


class GlobalBatchNorm2d(_GlobalBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics cover the batch of every process.

    Per channel, sum and count are all-reduced for the global mean, then the squared deviations
    for the biased variance; both reductions are differentiable. Running statistics take the
    unbiased global variance; eval mode is plain batch norm. State dicts interchange with
    ``nn.BatchNorm2d``. (B, C, H, W) -> (B, C, H, W).
    """


class GlobalBatchNorm1d(_GlobalBatchNormMixin, nn.BatchNorm1d):
    """:class:`GlobalBatchNorm2d` for (B, C) or (B, C, L) inputs (e.g. BN in projector MLPs)."""


class GlobalBatchNormAct2d(_GlobalBatchNormMixin, BatchNormAct2d):
    """timm's ``BatchNormAct2d`` (batch norm, dropout, activation) with
    :class:`GlobalBatchNorm2d`'s statistics; a plain BN would drop the activation.
    (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(_GlobalBatchNormMixin.forward(self, x)))


def convert_batchnorm(module: nn.Module, mode: str) -> nn.Module:
    """Return ``module`` with its batch norms made synchronised (or not) across processes.

    Children are replaced in place (same ``state_dict`` keys); a new object only when ``module``
    itself is a batch norm. ``mode``: "bn" changes nothing; "sync" uses
    :class:`GlobalBatchNorm1d/2d` (CPU/gloo and GPU); "torch_sync" ``nn.SyncBatchNorm`` (CUDA).
    """
    if mode not in _MODES:
        raise ValueError(f"unknown batch-norm mode {mode!r}; known: {', '.join(_MODES)}")
    if mode == "bn":
        return module
    if mode == "torch_sync":  # timm's converter: torch's, plus BatchNormAct2d -> SyncBatchNormAct
        return convert_sync_batchnorm(module)
    return _to_global(module)


def _to_global(module: nn.Module) -> nn.Module:
    replacement = _global_twin(module)
    if replacement is not None:
        return replacement
    for name, child in module.named_children():
        converted = _to_global(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _global_twin(module: nn.Module) -> nn.Module | None:
    """A GlobalBatchNorm sharing ``module``'s parameters and buffers, or None if not a BN."""
    if isinstance(module, _GlobalBatchNormMixin):
        return None
    if isinstance(module, BatchNormAct2d):
        cls: type[nn.modules.batchnorm._BatchNorm] = GlobalBatchNormAct2d
    elif isinstance(module, nn.BatchNorm2d):
        cls = GlobalBatchNorm2d
    elif isinstance(module, nn.BatchNorm1d):
        cls = GlobalBatchNorm1d
    else:
        return None
    twin = cls(
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
    )
    # Reuse the very tensors (device, dtype, requires_grad and values carry over; the old module
    # is discarded), as nn.SyncBatchNorm.convert_sync_batchnorm does.
    if module.affine:
        twin.weight = module.weight
        twin.bias = module.bias
    if module.track_running_stats:
        twin.running_mean = module.running_mean
        twin.running_var = module.running_var
        twin.num_batches_tracked = module.num_batches_tracked
    if isinstance(twin, GlobalBatchNormAct2d):
        twin.drop, twin.act = module.drop, module.act
    twin.train(module.training)
    return twin
