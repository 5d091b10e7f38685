"""Built-in aerial scenes: a proxy of top-down multi-object images that short pretraining can learn.

4-9 occluding objects at scales 2-3x apart on cluttered ground, each class carried by texture
and parts, never by colour (two :data:`PALETTE` colours per scene, independent of class), so a
raw-pixel probe stays near chance. Classes: ``roof`` (ridged rotated rectangle, dark rim),
``tree`` (speckled blob), ``vehicle`` (small rectangle, two window bands), ``field`` (checkerboard
quadrilateral), ``pond`` (concentric rings), ``background`` (two-colour ground, thin tracks).
A scene is a pure function of ``(seed, index)`` and renders at any size.
"""

from __future__ import annotations

import math

import numpy as np

from densessl.data.synthetic import Scene, SceneSet, annotate_scene, value_noise
from densessl.registry import SCENES

CLASS_NAMES = ("background", "roof", "tree", "vehicle", "field", "pond")

MIN_OBJECTS, MAX_OBJECTS = 4, 9
TRACKS = (1, 4)  # thin clutter lines on the ground per scene
# Per class: (min, max) half-size as a fraction of the shorter side, and the relative draw weight.
SIZES = {
    "roof": (0.09, 0.18),
    "tree": (0.08, 0.14),
    "vehicle": (0.07, 0.11),
    "field": (0.14, 0.26),
    "pond": (0.09, 0.16),
}
WEIGHTS = {"roof": 1.0, "tree": 1.0, "vehicle": 1.0, "field": 0.6, "pond": 0.6}


# Every scene is painted in two colours of this small palette (plus a little noise), whatever
# the class: its ground, its clutter and all its objects. Colours drawn freely (per scene or per
# object) identify each scene and each object, and instance discrimination then learns colour
# histograms before anything else; with two colours per scene, colour is a weak cue for the
# instance and none for the class or the object, so two views can only be matched, and two
# objects only told apart, by texture, parts and layout.
PALETTE = np.array(
    [
        [200, 60, 50],  # brick
        [70, 150, 60],  # leaf
        [60, 90, 170],  # slate blue
        [220, 200, 90],  # straw
        [40, 40, 45],  # asphalt
        [225, 225, 215],  # concrete
    ],
    dtype=np.float32,
)
COLOUR_NOISE = 12.0  # per-channel standard deviation around a palette colour


class SceneColours:
    """The two palette entries of one scene; every colour drawn is one of them plus noise."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.entries = rng.choice(len(PALETTE), size=2, replace=False)

    def _noisy(self, entry: int) -> np.ndarray:
        noise = self.rng.normal(0.0, COLOUR_NOISE, size=3).astype(np.float32)
        return np.clip(PALETTE[entry] + noise, 0, 255)

    def one(self) -> np.ndarray:
        """(3,) float32 RGB: either of the scene's colours."""
        return self._noisy(int(self.entries[self.rng.integers(2)]))

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """Both colours, in a random order (which one is the pattern's foreground)."""
        first, second = self.entries[self.rng.permutation(2)]
        return self._noisy(int(first)), self._noisy(int(second))


def _rotate(dx: np.ndarray, dy: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets in the object's own frame: u along its angle, v across."""
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _blend(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(h, w) weight in [0, 1] -> (h, w, 3) mix of two colours."""
    return first + weight[..., None].astype(np.float32) * (second - first)


def _roof(rng, colours, dx, dy, size, extent):
    length, width = size, size * rng.uniform(0.45, 0.8)
    u, v = _rotate(dx, dy, rng.uniform(0, math.pi))
    inside = (np.abs(u) <= length) & (np.abs(v) <= width)
    period = rng.uniform(0.04, 0.06) * extent
    ridges = (np.abs(v) / period + rng.uniform(0, 1)) % 1.0 < 0.5
    rim = (np.abs(u) > length - 0.08 * width) | (np.abs(v) > 0.9 * width)
    first, second = colours.pair()
    paint = _blend(first, second, ridges.astype(np.float32))
    paint[np.broadcast_to(rim, paint.shape[:2])] *= 0.35
    return inside, paint


def _tree(rng, colours, dx, dy, size, extent):
    angle = np.arctan2(dy, dx)
    lobes = int(rng.integers(3, 7))
    wobble = 1 + 0.22 * np.sin(lobes * angle + rng.uniform(0, 2 * math.pi))
    inside = np.hypot(dx, dy) <= size * wobble
    frequency = rng.uniform(0.12, 0.18)  # lattice cells per pixel at 128 px: speckle
    scale = frequency * 128 / extent
    x, y = np.broadcast_arrays(dx * scale + 12, dy * scale + 12)
    speckle = value_noise(rng, x, y) > 0.5
    first, second = colours.pair()
    return inside, _blend(first, second, speckle.astype(np.float32))


def _vehicle(rng, colours, dx, dy, size, extent):
    length, width = size, size * rng.uniform(0.4, 0.55)
    u, v = _rotate(dx, dy, rng.uniform(0, 2 * math.pi))
    inside = (np.abs(u) <= length) & (np.abs(v) <= width)
    windows = (np.abs(np.abs(u) - 0.45 * length) < 0.15 * length) & (np.abs(v) < 0.8 * width)
    body = colours.one()
    paint = np.broadcast_to(body, (*inside.shape, 3)).copy()
    paint[windows] = body * 0.15
    return inside, paint


def _field(rng, colours, dx, dy, size, extent):
    u, v = _rotate(dx, dy, rng.uniform(0, math.pi))
    half = size * rng.uniform(0.7, 1.0, size=2)
    shear = rng.uniform(-0.3, 0.3)
    inside = (np.abs(u + shear * v) <= half[0]) & (np.abs(v) <= half[1])
    period = rng.uniform(0.07, 0.1) * extent
    plots = (np.floor(u / period) + np.floor(v / period)) % 2
    first, second = colours.pair()
    return inside, _blend(first, second, plots.astype(np.float32))


def _pond(rng, colours, dx, dy, size, extent):
    u, v = _rotate(dx, dy, rng.uniform(0, math.pi))
    squash = rng.uniform(0.55, 1.0)
    radius = np.hypot(u, v / squash)
    inside = radius <= size
    period = rng.uniform(0.05, 0.07) * extent
    rings = (radius / period) % 1.0 < 0.5
    first, second = colours.pair()
    return inside, _blend(first, second, rings.astype(np.float32))


PAINTERS = {"roof": _roof, "tree": _tree, "vehicle": _vehicle, "field": _field, "pond": _pond}


def _ground(
    rng: np.random.Generator, colours: SceneColours, x: np.ndarray, y: np.ndarray, extent: float
) -> np.ndarray:
    """Two-colour low-frequency noise with thin random tracks: (h, w, 3) float32."""
    scale = rng.uniform(2.0, 4.0) / extent
    grid_x, grid_y = np.broadcast_arrays(x * scale, y * scale)
    first, second = colours.pair()
    canvas = _blend(first, second, value_noise(rng, grid_x, grid_y))
    for _ in range(int(rng.integers(TRACKS[0], TRACKS[1] + 1))):
        angle = rng.uniform(0, math.pi)
        offset = rng.uniform(-0.5, 0.5) * extent
        centre_x, centre_y = x - x.mean(), y - y.mean()
        distance = np.abs(-centre_x * math.sin(angle) + centre_y * math.cos(angle) - offset)
        track = distance <= rng.uniform(0.006, 0.015) * extent
        canvas[track] = colours.one()
    return canvas


@SCENES.register("aerial")
class AerialScenes(SceneSet):
    """Top-down scenes of textured objects on cluttered ground (see :class:`SceneSet`)."""

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    kind = "aerial scene"

    def render(self, rng: np.random.Generator) -> Scene:
        height, width = self.image_size
        extent = float(min(height, width))
        x = np.arange(width, dtype=np.float32)[None, :] + 0.5
        y = np.arange(height, dtype=np.float32)[:, None] + 0.5
        colours = SceneColours(rng)
        canvas = _ground(rng, colours, x, y, extent)
        owner = np.zeros((height, width), dtype=np.int64)  # 0 ground, k + 1 object k
        names = list(PAINTERS)
        weights = np.array([WEIGHTS[n] for n in names])
        count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        kinds = rng.choice(len(names), size=count, p=weights / weights.sum())
        labels = kinds + 1
        drawn_area = np.zeros(count, dtype=np.int64)
        for k, kind in enumerate(kinds):
            name = names[kind]
            cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
            size = rng.uniform(*SIZES[name]) * extent
            reach = 1.5 * size + 1  # bounds every painter's outline
            x0, x1 = max(0, int(cx - reach)), min(width, math.ceil(cx + reach))
            y0, y1 = max(0, int(cy - reach)), min(height, math.ceil(cy + reach))
            dx, dy = x[:, x0:x1] - cx, y[y0:y1] - cy
            inside, paint = PAINTERS[name](rng, colours, dx, dy, size, extent)
            inside = np.broadcast_to(inside, (y1 - y0, x1 - x0))
            paint = np.broadcast_to(paint, (y1 - y0, x1 - x0, 3))
            canvas[y0:y1, x0:x1][inside] = paint[inside]
            owner[y0:y1, x0:x1][inside] = k + 1
            drawn_area[k] = int(inside.sum())
        return annotate_scene(canvas, owner, labels, drawn_area)
