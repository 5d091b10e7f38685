"""Data layer: image sources, multi-view transforms that keep their geometry, batching."""
