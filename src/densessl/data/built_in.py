"""The built-in scene sets by name, used when no folder is given: ``shapes``
(:mod:`densessl.data.synthetic`, classes by outline; the default, for tests and the golden
record) and ``aerial`` (:mod:`densessl.data.aerial_scenes`, classes by texture and parts; the
demo's data).
"""

from __future__ import annotations

from densessl.data import aerial_scenes, synthetic  # noqa: F401  (they register their sets)
from densessl.registry import SCENES

DEFAULT_SCENES = "shapes"


def built_in_scenes(name: str, num_images: int, image_size: int | tuple[int, int], seed: int):
    """The scene set ``name`` (see :data:`densessl.registry.SCENES`): scene ``i`` of seed
    ``seed`` rendered at ``image_size``, ``num_images`` of them."""
    return SCENES.get(name)(num_images=num_images, image_size=image_size, seed=seed)
