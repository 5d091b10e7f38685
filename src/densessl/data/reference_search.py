"""SoCo's reference selective search, ported: Felzenszwalb segments, then the reference grouping.

The reference [hologerry/SoCo ``selective_search/selective_search.py``] runs scikit-image's
``felzenszwalb(img_as_float(rgb), scale=300, sigma=0.9, min_size=100)``, then its hierarchical
grouping. Segmenters: ``"skimage"`` (optional; the reference's boxes exactly) or ``"opencv"``
(same parameters, faster, different segments and boxes).
"""

from __future__ import annotations

import numpy as np

from densessl.data.hierarchical_grouping import hierarchical_grouping
from densessl.errors import ConfigError

SOCO_EXTRA = "soco"  # the extra that installs OpenCV-contrib


def opencv():
    """OpenCV-contrib, imported where selective search runs (extra ``densessl[soco]``);
    :class:`ConfigError` if missing or without its contrib modules."""
    try:
        import cv2
    except ImportError as err:
        raise ConfigError(
            "SoCo's object proposals need OpenCV-contrib, which is not installed: "
            f"pip install 'densessl[{SOCO_EXTRA}]'"
        ) from err
    if not hasattr(cv2, "ximgproc"):
        raise ConfigError(
            "SoCo's object proposals need OpenCV's contrib modules (cv2.ximgproc): replace "
            f"opencv-python with opencv-contrib-python-headless, or pip install "
            f"'densessl[{SOCO_EXTRA}]'"
        )
    return cv2


SEGMENTERS = ("skimage", "opencv")


def felzenszwalb_segments(
    rgb: np.ndarray, k: float, sigma: float, min_size: int, segmenter: str = "skimage"
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher over-segmentation of an (H, W, 3) uint8 image: (H, W) labels.

    Args:
        k: scale of the merging threshold ``k / |C|``, 0..255 units (scikit-image's ``scale``).
        sigma: Gaussian smoothing before building the graph.
        min_size: smallest segment in pixels (smaller ones are merged away).

    ConfigError for an unknown ``segmenter``, or "skimage" without scikit-image.
    """
    if segmenter == "opencv":
        cv2 = opencv()
        # One thread per search: parallelism comes from the process pool, over images.
        cv2.setNumThreads(1)
        graph = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, k, min_size)
        return graph.processImage(np.ascontiguousarray(rgb))
    if segmenter != "skimage":
        raise ConfigError(f"unknown segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    try:
        from skimage.segmentation import felzenszwalb
        from skimage.util import img_as_float
    except ImportError as error:
        raise ConfigError(
            "proposal route 'port' needs scikit-image: pip install scikit-image "
            "(or use route 'port_opencv_segments' or 'opencv')"
        ) from error
    return felzenszwalb(img_as_float(rgb), scale=k, sigma=sigma, min_size=min_size)


def reference_selective_search(
    rgb: np.ndarray, k: float, sigma: float, min_size: int, segmenter: str = "skimage"
) -> np.ndarray:
    """Every box of the reference's selective search of an (H, W, 3) uint8 image (unfiltered;
    Felzenszwalb parameters as :func:`felzenszwalb_segments`, the reference's 300, 0.9, 100):
    (M, 4) int64 inclusive ``min_x, min_y, max_x, max_y`` (the reference's ``x, y, x + w, y + h``).
    """
    labels = felzenszwalb_segments(rgb, k, sigma, min_size, segmenter)
    return hierarchical_grouping(labels, rgb)
