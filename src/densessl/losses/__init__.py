"""Self-supervised objectives as pure functions of tensors: one objective per file.

No modules, no state, no collectives: every function takes already-gathered tensors, so each can
be checked in one process against a plain-loop reference (``tests/reference/``). Matching and
neighbour tables live in :mod:`densessl.models`.
"""

from densessl.losses.byol import byol_loss
from densessl.losses.densecl import densecl_dense_loss
from densessl.losses.dino import cross_view_loss, dino_loss
from densessl.losses.mcl import mcl_cell_loss
from densessl.losses.moco import info_nce
from densessl.losses.pixpro import pixpro_loss
from densessl.losses.soco import box_pair_loss

__all__ = [
    "box_pair_loss",
    "byol_loss",
    "cross_view_loss",
    "densecl_dense_loss",
    "dino_loss",
    "info_nce",
    "mcl_cell_loss",
    "pixpro_loss",
]
