"""SoCo proposals: filter rules and fall-backs, level assignment, the resumable file job, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from densessl.cli import build_parser, main
from densessl.data import proposal_store
from densessl.data.proposal_store import (
    generate_proposals,
    load_proposals,
    proposals_for_source,
)
from densessl.data.proposals import (
    ROUTES,
    SEARCH_ROUTE,
    assign_levels,
    filter_boxes,
    image_proposals,
)
from densessl.data.sources import ImageFolder
from densessl.data.synthetic import SyntheticScenes
from densessl.errors import DataError


def test_filter_rules_with_inclusive_bounds():
    # 200x200 image: sqrt(w h) / 200 must lie in [0.3, 0.8], w/h in [1/3, 3], sides >= 32.
    boxes = np.array(
        [
            [0, 0, 60, 60],  # size exactly 0.3: kept
            [10, 20, 170, 180],  # 160x160, size exactly 0.8: kept
            [0, 0, 161, 161],  # size 0.805: dropped
            [0, 0, 59, 59],  # size 0.295: dropped
            [5, 5, 45, 125],  # 40x120, ratio exactly 1/3, size sqrt(4800)/200 = 0.346: kept
            [0, 0, 39, 120],  # ratio 0.325: dropped
            [0, 0, 150, 50],  # 150x50, ratio exactly 3, size 0.433: kept
            [0, 0, 151, 50],  # ratio 3.02: dropped
        ],
        dtype=np.float32,
    )
    kept = filter_boxes(boxes, (200, 200))
    np.testing.assert_array_equal(kept, boxes[[0, 1, 4, 6]])


def test_filter_side_rule_alone():
    # In a 100x100 image a 31x31 box passes size (0.31) and ratio, failing only the 32-px side
    # rule; 32x32 passes all. A 31-px box is never rescued by a fall-back either (all keep it).
    boxes = np.array([[0, 0, 31, 31], [50, 50, 82, 82]], dtype=np.float64)
    np.testing.assert_array_equal(filter_boxes(boxes, (100, 100)), boxes[[1]])


def test_fallback_drops_size_rule_first():
    # No box passes the size rule (0.2 and 1.0); the ratio-only rule keeps the first two.
    boxes = np.array([[0, 0, 40, 40], [0, 0, 200, 200], [0, 0, 200, 40]], dtype=np.float32)
    np.testing.assert_array_equal(filter_boxes(boxes, (200, 200)), boxes[:2])


def test_fallback_then_drops_aspect_rule():
    # 200x40 (ratio 5) and 32x140 (ratio 0.23) only pass the side rule; 20x20 fails even that.
    boxes = np.array([[0, 0, 200, 40], [10, 10, 42, 150], [0, 0, 20, 20]], dtype=np.float32)
    np.testing.assert_array_equal(filter_boxes(boxes, (200, 200)), boxes[:2])


def test_fallback_to_whole_image_is_width_height_ordered():
    boxes = np.array([[0, 0, 20, 20], [0, 0, 31, 200]], dtype=np.float32)
    whole = filter_boxes(boxes, (120, 300))  # H = 120, W = 300
    np.testing.assert_array_equal(whole, [[0, 0, 300, 120]])
    assert whole.dtype == np.float32
    np.testing.assert_array_equal(filter_boxes(np.zeros((0, 4)), (120, 300)), [[0, 0, 300, 120]])


def test_filter_keeps_torch_kind_and_dtype():
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    kept = filter_boxes(boxes, (200, 200))
    assert isinstance(kept, torch.Tensor) and kept.dtype == torch.float32
    assert kept.tolist() == [[0.0, 0.0, 60.0, 60.0]]
    whole = filter_boxes(torch.zeros(0, 4, dtype=torch.float64), (10, 20))
    assert isinstance(whole, torch.Tensor) and whole.tolist() == [[0, 0, 20, 10]]


def _squares(sides) -> np.ndarray:
    return np.array([[0, 0, s, s] for s in sides], dtype=np.float64)


def test_assign_levels_at_and_around_thresholds():
    sides = [1, 47.9, 48, 48.1, 96, 96.1, 192, 192.1, 224, 224.1]
    expected = [0, 0, 0, 1, 1, 2, 2, 3, 3, -1]  # s <= 48 | <= 96 | <= 192 | <= 224 | none
    np.testing.assert_array_equal(assign_levels(_squares(sides)), expected)
    # sqrt(w h), not a side: 24 x 96 is 48 (P2), 24 x 96.5 just above it (P3).
    oblong = np.array([[0, 0, 24, 96], [10, 10, 34, 106.5]])
    np.testing.assert_array_equal(assign_levels(oblong), [0, 1])
    levels = assign_levels(torch.tensor(_squares([10, 100])), thresholds=(50, 150))
    assert isinstance(levels, torch.Tensor) and levels.dtype == torch.int64
    assert levels.tolist() == [0, 1]


def _scene(seed: int) -> Image.Image:
    """A noisy background with a few flat rectangles: something for selective search to find."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 130, size=(96, 128, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, 80), rng.integers(0, 50)
        w, h = rng.integers(30, 60), rng.integers(30, 50)
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png", "sub/d.png"]):
        _scene(i).save(root / name)
    return root


def test_file_round_trip_without_pickle(folder, tmp_path):
    out = tmp_path / "props.npz"
    result = generate_proposals(ImageFolder(folder), out, workers=1, progress=False)
    assert result.complete and result.computed == 4 and not result.skipped
    assert not out.with_name(out.name + ".partial.jsonl").exists()
    with np.load(out, allow_pickle=False) as raw:  # would raise on any object array
        assert raw["offsets"].tolist()[0] == 0 and raw["boxes"].dtype == np.float32
        assert json.loads(str(raw["meta"]))["count"] == 4
    loaded = load_proposals(out, ImageFolder(folder))
    assert sorted(loaded) == ["a.png", "b.jpg", "sub/c.png", "sub/d.png"]
    for key, boxes in loaded.items():
        direct = image_proposals(ImageFolder(folder).load_image(sorted(loaded).index(key)))
        np.testing.assert_array_equal(boxes, direct)


def test_resume_redoes_nothing_and_equals_uninterrupted(folder, tmp_path, monkeypatch):
    source = ImageFolder(folder)
    reference = tmp_path / "whole.npz"
    generate_proposals(source, reference, workers=1, progress=False)

    out = tmp_path / "props.npz"
    first = generate_proposals(source, out, workers=1, max_images=2, progress=False)
    assert not first.complete and first.computed == 2 and not out.exists()
    records = out.with_name(out.name + ".partial.jsonl")
    with open(records, "a") as f:
        f.write('{"index": 3, "size": [96, 1')  # a line torn by a kill mid-write

    searched = []

    def counting(image, max_side, route):
        searched.append(image.size)
        return image_proposals(image, max_side, route)

    monkeypatch.setattr(proposal_store, "image_proposals", counting)
    second = generate_proposals(source, out, workers=1, progress=False)
    assert second.complete and second.computed == 2 and second.reused == 2
    assert len(searched) == 2
    again = generate_proposals(source, out, workers=1, progress=False)
    assert again.computed == 0 and len(searched) == 2  # a finished file is never redone
    expected, got = load_proposals(reference), load_proposals(out)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key], got[key])


def test_pool_equals_single_process(folder, tmp_path):
    source = ImageFolder(folder)
    generate_proposals(source, tmp_path / "one.npz", workers=1, progress=False)
    generate_proposals(source, tmp_path / "two.npz", workers=2, progress=False)
    one, two = load_proposals(tmp_path / "one.npz"), load_proposals(tmp_path / "two.npz")
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_broken_image_skipped_and_other_folder_rejected(folder, tmp_path):
    (folder / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "props.npz"
    result = generate_proposals(ImageFolder(folder), out, workers=1, progress=False)
    assert result.complete and result.skipped == 1
    assert "broken.png" not in load_proposals(out) and len(load_proposals(out)) == 4
    (folder / "sub" / "d.png").unlink()
    with pytest.raises(DataError) as error:
        load_proposals(out, ImageFolder(folder))
    message = str(error.value)  # 5 files when made (broken one included), 4 now
    assert "\n" not in message and "made for 5 images" in message and "the 4 of" in message


def test_pretrain_cache_beside_folder_and_for_synthetic(folder, tmp_path):
    boxes = proposals_for_source(ImageFolder(folder), tmp_path / "run", 1, progress=False)
    assert len(boxes) == 4 and all(b.shape[0] >= 1 and b.shape[1] == 4 for b in boxes)
    assert (folder / ".densessl_proposals.npz").exists()
    assert len(ImageFolder(folder)) == 4  # the hidden cache is not taken for an image
    scenes = SyntheticScenes(num_images=3, image_size=64, seed=5)
    synthetic = proposals_for_source(scenes, tmp_path / "run", 1, progress=False)
    assert len(synthetic) == 3 and all(b.shape[0] >= 1 for b in synthetic)
    assert len(list((tmp_path / "run").glob("proposals_*.npz"))) == 1


def test_cli_writes_file_and_rejects_missing_or_empty_folder(folder, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    assert main(["proposals", "--data", str(folder), "--out", str(out), "--workers", "1"]) == 0
    assert len(load_proposals(out)) == 4
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "missing", tmp_path / "empty"):
        capsys.readouterr()
        code = main(["proposals", "--data", str(data), "--out", str(tmp_path / "x.npz")])
        error = capsys.readouterr().err
        assert code == 2 and error.startswith("densessl: error:") and error.count("\n") == 1


def test_cli_route_option_runs_that_route_and_records_it(folder, tmp_path):
    out = tmp_path / "port.npz"
    argv = ["proposals", "--data", str(folder), "--out", str(out), "--workers", "1"]
    assert main([*argv, "--route", "port_opencv_segments", "--max-side", "64"]) == 0
    with np.load(out, allow_pickle=False) as raw:
        assert json.loads(str(raw["meta"]))["search"] == ROUTES["port_opencv_segments"]
    loaded = load_proposals(out)
    image = ImageFolder(folder).load_image(0)
    direct = image_proposals(image, 64, "port_opencv_segments")
    np.testing.assert_array_equal(loaded[sorted(loaded)[0]], direct)
    # The command line names its choices without importing cv2; they must be the library's.
    args = build_parser().parse_args(["proposals", "--data", "x", "--out", "y"])
    assert args.route == SEARCH_ROUTE
    for route in ROUTES:
        assert build_parser().parse_args([*argv, "--route", route]).route == route
