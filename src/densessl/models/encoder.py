"""One network of a method: its named parts, nothing more."""

from __future__ import annotations

from torch import nn


class Encoder(nn.Module):
    """A container of named parts (``backbone``, ``global_head``, ``fpn`` ...), without a forward.

    The method composes the parts in its own named steps, which take the encoder as an argument,
    so the student and its EMA teacher run exactly the same code. Parts are registered in the
    order given: the teacher's EMA pairs parameters by that order.
    """

    def __init__(self, **parts: nn.Module) -> None:
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)
