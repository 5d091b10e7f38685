"""The reference selective-search port: LBP codes, region features, neighbours, similarity and
merge order against hand computations; the routes of selective_search on a drawn image.

The port's exactness against SoCo's own code (all boxes, in order) is measured by
benchmarks/proposals_speed.py, which runs that code; it is not a dependency of the tests.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from densessl.data.hierarchical_grouping import (
    Regions,
    box_neighbours,
    group,
    region_features,
    similarity,
)
from densessl.data.local_binary_pattern import local_binary_pattern
from densessl.data.proposals import filter_boxes, selective_search
from densessl.errors import ConfigError


def test_lbp_codes_of_ramps_and_flat_patches():
    # Bit p is neighbour p (angle 2 pi p / 8, row offset -sin: p = 2 is the pixel above) >= centre.
    # Columns increasing: right side (p 0, 1, 7) larger, above/below (p 2, 6) equal -> set.
    columns = np.tile(np.arange(8.0), (8, 1))
    assert (local_binary_pattern(columns)[1:-1, 1:-1] == 1 + 2 + 4 + 64 + 128).all()
    # Rows increasing: below (p 5, 6, 7) larger, left/right (p 0, 4) equal -> set.
    rows = columns.T
    assert (local_binary_pattern(rows)[1:-1, 1:-1] == 1 + 16 + 32 + 64 + 128).all()
    # A flat patch sets every bit; outside the image counts as 0, so the top-left corner of a
    # positive flat image only sees right (p 0), below (p 6) and below-right (p 7).
    flat = np.full((5, 5), 7.0)
    codes = local_binary_pattern(flat)
    assert codes[2, 2] == 255 and codes[0, 0] == 1 + 64 + 128


def test_lbp_diagonal_interpolates_bilinearly():
    # Only pixel (0, 2) is bright; centre (1, 1)'s up-right neighbour sits at (1 - 0.70711,
    # 1 + 0.70711): weights 0.70711^2 on (0, 2) and 0.29289 * 0.70711 on the centre, so it reads
    # 5.0 + 0.207 c. That is >= c (bit 1 set) for c = 4, not for c = 6; nearest-pixel sampling
    # (10) would set both.
    for centre, expected in ((4.0, 2), (6.0, 0)):
        image = np.zeros((3, 3))
        image[0, 2], image[1, 1] = 10.0, centre
        assert local_binary_pattern(image)[1, 1] & 2 == expected


def _three_regions() -> tuple[np.ndarray, np.ndarray]:
    labels = np.array(
        [[5, 5, 5, 2, 2, 2], [5, 5, 5, 2, 2, 2], [7, 7, 7, 7, 7, 7], [7, 7, 7, 7, 7, 7]]
    )
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:2, 3:] = (255, 10, 10)  # value 255 -> last of 25 bins over 0..255
    rgb[2:, :3] = (100, 100, 100)  # 100 / 10.2 = 9.8 -> bin 9
    rgb[2:, 3:] = (0, 0, 200)  # 200 / 10.2 = 19.6 -> bin 19
    return labels, rgb


def test_region_features_in_first_appearance_order():
    labels, rgb = _three_regions()
    regions = region_features(labels, rgb)
    # Labels 5, 2, 7 first appear in that order of a row-major scan.
    assert regions.boxes.tolist() == [[0, 0, 2, 1], [3, 0, 5, 1], [0, 2, 5, 3]]
    assert regions.sizes.tolist() == [6, 6, 12]
    expected = np.zeros((3, 25))
    expected[0, 0] = expected[1, 24] = 1.0
    expected[2, 9] = expected[2, 19] = 0.5
    np.testing.assert_array_equal(regions.colour, expected)
    for k, label in enumerate((5, 2, 7)):
        for channel in range(3):
            codes = local_binary_pattern(rgb[:, :, channel])[labels == label]
            counts = np.histogram(codes, 10, (0.0, 255.0))[0] / len(codes)
            got = regions.texture[k, channel * 10 : channel * 10 + 10]
            np.testing.assert_array_equal(got, counts)


def test_neighbours_are_the_references_corner_test():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0
            [5, 5, 20, 20],  # 1: its corner (5, 5) is strictly inside 0
            [10, 0, 20, 10],  # 2: only touches 0's edge; inside 1? corner (10, 10) -> yes
            [2, 2, 3, 3],  # 3: inside 0, but the test looks at the LATER box's corners in 0
            [-5, -5, 30, 30],  # 4: contains everything; no corner inside any earlier box
        ]
    )
    assert box_neighbours(boxes).tolist() == [[0, 1], [0, 3], [1, 2]]
    # Thin boxes have no strictly-inside corner: the regions of _three_regions pair with none.
    assert box_neighbours(region_features(*_three_regions()).boxes).shape == (0, 2)


def _regions(boxes, sizes, colour, texture) -> Regions:
    return Regions(np.array(boxes), np.array(sizes), np.array(colour, float), np.array(texture))


def test_similarity_closed_form():
    colour = np.zeros((2, 25))
    colour[0, 0], colour[1, :2] = 1.0, 0.5
    texture = np.zeros((2, 30))
    texture[0, ::10] = 1.0
    texture[1, ::10], texture[1, 1::10] = 0.25, 0.75
    regions = _regions([[0, 0, 4, 4], [2, 1, 9, 5]], [10, 30], colour, texture)
    got = similarity(regions, np.array([0]), np.array([1]), area=100)
    # colour 2 (hue, saturation) + 0.5, texture 3 * 0.25, size 1 - 40/100,
    # fill 1 - (9 * 5 - 40) / 100 (joint box 0..9 x 0..5 in inclusive coordinates).
    assert got[0] == pytest.approx(2.5 + 0.75 + 0.6 + 0.95, abs=1e-12)


def test_group_merges_most_similar_first_and_ties_to_the_newest_pair():
    uniform = np.full((3, 25), 1 / 25)
    flat = np.full((3, 30), 1 / 30)
    # A-C identical colour, B different: A+C merges first (box 0..9), then with B.
    colour = uniform.copy()
    colour[1] = 0.0
    colour[1, 0] = 1.0
    boxes = [[0, 0, 4, 4], [2, 2, 6, 6], [3, 3, 9, 9]]  # every pair neighbours
    merged = group(_regions(boxes, [10, 10, 10], colour, flat), area=100)
    assert merged.tolist() == [*boxes, [0, 0, 9, 9], [0, 0, 9, 9]]
    # A-B and B-C tie (same sizes, histograms, joint box area); A-C are not neighbours. The
    # reference takes the pair made last, B-C, then joins A.
    boxes = [[0, 0, 4, 4], [2, 2, 6, 6], [4, 4, 8, 8]]
    merged = group(_regions(boxes, [10, 10, 10], uniform, flat), area=100)
    assert merged.tolist() == [*boxes, [2, 2, 8, 8], [0, 0, 8, 8]]


def test_group_ties_between_new_pairs_go_to_the_later_one():
    # A and B (same colour) merge first into E = 10..16 x 10..16; C (left, a neighbour of A) and
    # D (right, of B) are alike and E+C, E+D have equal joint boxes (11 x 6), so the two new pairs
    # tie. The reference made (E, C) before (E, D), from the order of A-C before B-D; the later
    # one, E+D, merges first.
    colour = np.zeros((4, 25))
    colour[:2] = 1 / 25
    colour[2:, 0] = 1.0
    boxes = [[10, 10, 14, 14], [12, 12, 16, 16], [5, 11, 11, 15], [15, 11, 21, 15]]
    regions = _regions(boxes, [10] * 4, colour, np.full((4, 30), 1 / 30))
    assert box_neighbours(regions.boxes).tolist() == [[0, 1], [0, 2], [1, 3]]
    merged = group(regions, area=1000)
    assert merged.tolist() == [*boxes, [10, 10, 16, 16], [10, 10, 21, 16], [5, 10, 21, 16]]


def _drawn_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = np.full((96, 128, 3), 40, dtype=np.uint8) + rng.integers(0, 3, (96, 128, 3), np.uint8)
    rgb[20:70, 10:60] = (230, 40, 40)  # a red 50 x 50 square: pixels 10..59 x 20..69
    rgb[30:90, 70:120] = (40, 40, 230)  # a blue 50 x 60 box: pixels 70..119 x 30..89
    return rgb


def _best_iou(boxes: np.ndarray, target: list[float]) -> float:
    t = np.array(target, dtype=np.float64)
    lt, rb = np.maximum(boxes[:, :2], t[:2]), np.minimum(boxes[:, 2:], t[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(t[2:] - t[:2]) - inter
    return float((inter / union).max())


@pytest.mark.parametrize("max_side", [None, 64])
def test_port_route_finds_the_drawn_objects(max_side):
    boxes = selective_search(_drawn_image(), max_side, "port_opencv_segments")
    # The reference's box of pixels 10..59 is x1 = 10, x2 = 59 (its x + w). The blurred edges
    # become thin segments of their own, so the best box may be a pixel inside the object.
    for target in ([10, 20, 59, 69], [70, 30, 119, 89]):
        assert _best_iou(boxes.astype(np.float64), target) > 0.9
    kept = filter_boxes(boxes, (96, 128))
    assert _best_iou(kept.astype(np.float64), [10, 20, 59, 69]) > 0.9


def test_unknown_route_and_missing_scikit_image_are_one_line_errors(monkeypatch):
    with pytest.raises(ConfigError, match="opencv, port, port_opencv_segments"):
        selective_search(_drawn_image(), 64, "fast")
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)  # import fails
    with pytest.raises(ConfigError, match="pip install scikit-image") as error:
        selective_search(_drawn_image(), 64, "port")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("route", ["opencv", "port_opencv_segments"])
def test_felzenszwalb_settings_shrink_with_the_searched_copy(route, monkeypatch):
    # A 512 x 384 image searched at longer side 256 (scale 1/2): sigma 0.9 -> 0.45 and min_size
    # 100 -> 25 (area), k stays 300; at full size the reference's 0.9, 300, 100.
    made = []
    real = cv2.ximgproc.segmentation.createGraphSegmentation

    def spy(sigma, k, min_size):
        made.append((sigma, k, min_size))
        return real(sigma, k, min_size)

    monkeypatch.setattr(cv2.ximgproc.segmentation, "createGraphSegmentation", spy)
    image = np.zeros((384, 512, 3), dtype=np.uint8)
    image[100:300, 100:400] = 200
    selective_search(image, 256, route)
    selective_search(image, None, route)
    assert made == [(0.45, 300, 25), (0.9, 300, 100)]
