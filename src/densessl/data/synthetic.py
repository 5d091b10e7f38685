"""Built-in procedural scenes: the default dataset, needing no files and no downloads.

A textured background with 2-6 overlapping objects of four shape classes; colour and texture are
independent of the class, so only shape separates them. A scene is a pure function of
``(seed, index)``, independent of the size it is rendered at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from densessl.registry import SCENES

CLASS_NAMES = ("background", "disc", "square", "triangle", "ring")
TEXTURES = ("flat", "stripes", "checker", "noise", "gradient")

MIN_OBJECTS, MAX_OBJECTS = 2, 6
# Object radius as a fraction of the image's shorter side.
MIN_RADIUS, MAX_RADIUS = 0.08, 0.2
# An instance is kept (given a box) only if this much of it stays visible.
MIN_VISIBLE_FRACTION = 0.01
MIN_VISIBLE_PIXELS = 16
# Value noise lattice: enough cells for any aspect ratio up to NOISE_LATTICE / max frequency.
NOISE_LATTICE = 24
NOISE_FREQUENCY = (2.0, 6.0)  # lattice cells per shorter image side


@dataclass
class Scene:
    """One rendered scene with its annotations.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) int64 class of the visible object at each pixel, 0 = background.
        boxes: (M, 4) float32 xyxy boxes (continuous pixel coordinates) of the visible part of
            each kept instance.
        labels: (M,) int64 class of each kept instance, in 1..num_classes - 1.
        instance_masks: (M, H, W) bool visible pixels of each kept instance.
    """

    image: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    instance_masks: np.ndarray


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def value_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice sampled bilinearly at (x, y) lattice units."""
    lattice = rng.random((NOISE_LATTICE, NOISE_LATTICE), dtype=np.float32)
    x = np.clip(x, 0, NOISE_LATTICE - 1.001)
    y = np.clip(y, 0, NOISE_LATTICE - 1.001)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x0 + 1] * fx
    bottom = lattice[y0 + 1, x0] * (1 - fx) + lattice[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def texture(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, extent: float) -> np.ndarray:
    """A random two-colour texture, (h, w, 3) float32 RGB in [0, 255], sampled at pixel centres
    ``x`` (1, w) and ``y`` (h, 1); lengths scale with ``extent`` (the shorter side)."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    first = rng.uniform(0, 255, size=3).astype(np.float32)
    second = rng.uniform(0, 255, size=3).astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(0.03, 0.15) * extent
    phase = rng.uniform(0, 1)
    along = x * math.cos(angle) + y * math.sin(angle)  # (h, w) coordinate along the angle
    across = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "flat":
        weight = np.zeros_like(along)
    elif kind == "stripes":
        weight = ((along / period + phase) % 1.0 < 0.5).astype(np.float32)
    elif kind == "checker":
        weight = ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float32)
    elif kind == "noise":
        frequency = rng.uniform(*NOISE_FREQUENCY) / extent
        grid_x, grid_y = np.broadcast_arrays(x * frequency, y * frequency)
        weight = value_noise(rng, grid_x, grid_y)
    else:  # gradient along the angle, spanning about the image
        weight = np.clip(along / (1.5 * extent) + phase - 0.5, 0, 1)
    weight = weight.astype(np.float32)[..., None]
    return first + weight * (second - first)


def shape_mask(
    label: int, dx: np.ndarray, dy: np.ndarray, radius: float, angle: float
) -> np.ndarray:
    """Which pixels a shape covers: (h, w) bool.

    Args:
        label: class index (1 disc, 2 square, 3 triangle, 4 ring).
        dx: (1, w) x offsets of pixel centres from the shape's centre; ``dy`` (h, 1) likewise.
    """
    name = CLASS_NAMES[label]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if name == "disc":
        return u**2 + v**2 <= radius**2
    if name == "ring":
        squared = u**2 + v**2
        return (squared <= radius**2) & (squared >= (0.55 * radius) ** 2)
    if name == "square":
        return (np.abs(u) <= 0.8 * radius) & (np.abs(v) <= 0.8 * radius)
    # Equilateral triangle of circumradius 1.25 r (area close to the other shapes'): inside all
    # three half-planes whose normals are 120 degrees apart, at the inradius.
    inradius = 0.625 * radius
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for k in range(3):
        normal = 2 * math.pi * k / 3
        inside &= u * math.cos(normal) + v * math.sin(normal) <= inradius
    return inside


class SceneSet:
    """A set of procedural scenes: scene ``i`` is a pure function of ``(seed, i)``.

    Subclasses set ``class_names``, ``num_classes`` and ``kind`` and implement :meth:`render`,
    drawing every length as a fraction of the shorter side.

    Args:
        image_size: side, or (height, width), of every scene in pixels.
        seed: scene ``i`` is drawn from ``np.random.default_rng([seed, i])``.
    """

    class_names: tuple[str, ...] = ()
    num_classes: int = 0
    kind: str = "scene"  # names a scene in messages: "<kind> <i>"

    def __init__(
        self, num_images: int = 2048, image_size: int | tuple[int, int] = 256, seed: int = 0
    ) -> None:
        self.num_images = num_images
        self.image_size = _pair(image_size)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def describe(self, i: int) -> str:
        return f"{self.kind} {i}"

    def load_image(self, i: int) -> Image.Image:
        return Image.fromarray(self.scene(i).image, mode="RGB")

    def scene(self, i: int) -> Scene:
        """Render scene ``i`` with its annotations: (H, W, 3) uint8 image, (H, W) mask, boxes."""
        if not 0 <= i < self.num_images:
            raise IndexError(f"scene {i} out of range 0..{self.num_images - 1}")
        return self.render(np.random.default_rng([self.seed, i]))

    def render(self, rng: np.random.Generator) -> Scene:
        raise NotImplementedError


@SCENES.register("shapes")
class SyntheticScenes(SceneSet):
    """Procedural scenes of textured shapes on textured backgrounds (see :class:`SceneSet`)."""

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    kind = "synthetic scene"

    def render(self, rng: np.random.Generator) -> Scene:
        height, width = self.image_size
        extent = float(min(height, width))
        x = np.arange(width, dtype=np.float32)[None, :] + 0.5
        y = np.arange(height, dtype=np.float32)[:, None] + 0.5
        canvas = texture(rng, x, y, extent)
        owner = np.zeros((height, width), dtype=np.int64)  # 0 background, k + 1 object k
        count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        labels = rng.integers(1, len(CLASS_NAMES), size=count)
        drawn_area = np.zeros(count, dtype=np.int64)
        for k in range(count):
            cx = rng.uniform(0.1, 0.9) * width
            cy = rng.uniform(0.1, 0.9) * height
            radius = rng.uniform(MIN_RADIUS, MAX_RADIUS) * extent
            angle = rng.uniform(0, 2 * math.pi)
            # Only the shape's bounding square is rasterised (1.25 r bounds every shape).
            reach = 1.25 * radius + 1
            x0, x1 = max(0, int(cx - reach)), min(width, math.ceil(cx + reach))
            y0, y1 = max(0, int(cy - reach)), min(height, math.ceil(cy + reach))
            inside = shape_mask(int(labels[k]), x[:, x0:x1] - cx, y[y0:y1] - cy, radius, angle)
            paint = texture(rng, x[:, x0:x1], y[y0:y1], extent)
            canvas[y0:y1, x0:x1][inside] = paint[inside]
            owner[y0:y1, x0:x1][inside] = k + 1
            drawn_area[k] = int(inside.sum())
        return annotate_scene(canvas, owner, labels, drawn_area)


def annotate_scene(
    canvas: np.ndarray, owner: np.ndarray, labels: np.ndarray, drawn_area: np.ndarray
) -> Scene:
    """Scene from a painted canvas and the per-pixel owner (0 background, k + 1 object k);
    instances too occluded to see get no box but keep their visible pixels' class."""
    visible = np.bincount(owner.ravel(), minlength=len(labels) + 1)[1:]
    keep = (visible >= MIN_VISIBLE_PIXELS) & (visible >= MIN_VISIBLE_FRACTION * drawn_area)
    kept = np.flatnonzero(keep)
    # Every visible object pixel keeps its class, even of an instance too small for a box.
    mask = np.concatenate([[0], labels])[owner].astype(np.int64)
    instance_masks = owner[None] == (kept + 1)[:, None, None]
    boxes = np.zeros((len(kept), 4), dtype=np.float32)
    for row, instance in enumerate(instance_masks):
        cols = np.flatnonzero(instance.any(axis=0))
        rows = np.flatnonzero(instance.any(axis=1))
        boxes[row] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image, mask, boxes, labels[kept].astype(np.int64), instance_masks)
