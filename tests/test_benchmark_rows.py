"""The CamVid benchmarks' bookkeeping (benchmarks/probe_rows.py), which lets one measurement be
split into several short jobs on a shared machine: each row is merged into one JSON file, a
pretraining run reused by a later invocation keeps the time its own summary recorded (it used
to be written as 0.0), and both benchmarks probe a backbone into a row the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from probe_rows import pretrain_minutes, probe_row, save_row


def test_a_reused_run_keeps_the_minutes_of_its_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"seconds": 438.39, "steps": 300}))
    assert pretrain_minutes(tmp_path) == 7.3  # 438.39 s / 60 = 7.31 min
    assert pretrain_minutes(tmp_path / "never_trained") is None


def test_rows_of_separate_invocations_merge_into_one_file(tmp_path):
    results = tmp_path / "rows.json"
    save_row(results, "scratch", {"linear": 1.0})
    save_row(results, "start", {"linear": 2.0})
    save_row(results, "scratch", {"linear": 3.0})  # a re-run replaces only its own row
    assert json.loads(results.read_text()) == {"scratch": {"linear": 3.0}, "start": {"linear": 2.0}}
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporaries left


def write_two_colour_camvid(root: Path, count: dict[str, int]) -> None:
    """A CamVid-layout folder whose class is its colour: left half red = class 0 (sky), right
    half blue = class 3 (road). 64 x 64 px, so each half is whole 16 px raw-pixel patches."""
    from PIL import Image

    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32, 0] = 200
    image[:, 32:, 2] = 200
    label = np.zeros((64, 64), np.uint8)
    label[:, 32:] = 3
    for split, n in count.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(image).save(root / split / f"{i}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i}.png")


def test_a_probe_row_scores_a_colour_coded_set_perfectly_from_raw_pixels(tmp_path):
    from densessl.eval.segmentation import open_segmentation
    from densessl.eval.weights import load_backbone

    write_two_colour_camvid(tmp_path, {"train": 4, "val": 2})
    train = open_segmentation(tmp_path, "camvid", "train")
    val = open_segmentation(tmp_path, "camvid", "val")
    row = probe_row(load_backbone("pixels"), train, val, None, probe_size=64)
    # colour tells the class exactly, so both probes must get every pixel right
    assert row["linear"]["pixel_accuracy"] == pytest.approx(100.0)
    assert row["knn"]["pixel_accuracy"] == pytest.approx(100.0)
    assert row["levels"] == "+".join(load_backbone("pixels").default_levels)
    assert set(row) >= {"probe_minutes", "date", "threads"}


def test_seed_runs_of_one_recipe_pool_and_other_recipes_stay_out():
    from camvid_seeds import mean_sd, runs_of_recipe

    recipe = ["optim.base_lr=0.48", "data.image_size=160"]
    rows = {
        "densecl (resnet18, a)": {"overrides": [*recipe], "steps": 300},
        "densecl (resnet18, b)": {"overrides": [*reversed(recipe), "seed=2"], "steps": 300},
        "densecl (resnet18, c)": {"overrides": [*recipe, "method.momentum=0.999"], "steps": 300},
        "densecl (resnet18, e)": {"overrides": [*recipe], "steps": 900},  # longer: not a seed
        "mocov2 (resnet18, d)": {"overrides": [*recipe, "seed=1"], "steps": 300},
        "random (resnet18)": {"overrides": [], "steps": 0},
    }
    pooled = runs_of_recipe(rows, recipe, steps=300)
    assert {m: sorted(s) for m, s in pooled.items()} == {"densecl": [0, 2], "mocov2": [1]}
    assert pooled["densecl"][2] is rows["densecl (resnet18, b)"]
    assert pooled["densecl"][0] is rows["densecl (resnet18, a)"]  # not the 900-step run
    assert list(runs_of_recipe(rows, recipe, steps=900)) == ["densecl"]
    assert mean_sd([32.0, 35.0, 36.5]) == "34.5 ± 2.3"  # sd = sqrt((6.25 + 0.25 + 4) / 2)


def test_the_held_out_sequence_split_is_built_from_file_names(tmp_path):
    """benchmarks/camvid_heldout.py on a fake CamVid: a whole sequence goes to val, every other
    labelled frame (SegNet's train and val alike) to train; the pools link images, no copies."""
    from camvid_heldout import write_split

    frames = {"train": ["0001TP_1", "0006R0_1", "0006R0_2", "0016E5_1"], "val": ["0016E5_9"]}
    for split, names in frames.items():
        for folder in (split, f"{split}annot"):
            (tmp_path / "camvid" / folder).mkdir(parents=True)
            for name in names:
                (tmp_path / "camvid" / folder / f"{name}.png").write_bytes(name.encode())
    (tmp_path / "camvid" / "train" / "0001TP_2.png").write_bytes(b"no label: not used")
    out = tmp_path / "split"
    counts = write_split(tmp_path / "camvid", out, "0006R0")
    assert counts == {"seg/train": 3, "seg/val": 2, "pool_new": 3, "pool_all": 5}

    def names(folder):
        return sorted(p.stem for p in (out / folder).iterdir())

    assert names("seg/val") == names("seg/valannot") == ["0006R0_1", "0006R0_2"]
    assert names("seg/train") == ["0001TP_1", "0016E5_1", "0016E5_9"]
    assert names("pool_new") == names("seg/train")
    assert names("pool_all") == sorted(names("seg/train") + names("seg/val"))
    link = out / "seg" / "trainannot" / "0016E5_9.png"
    assert link.is_symlink() and link.read_bytes() == b"0016E5_9"
    with pytest.raises(SystemExit, match="no frame of sequence 9999XX"):
        write_split(tmp_path / "camvid", tmp_path / "other", "9999XX")


def test_a_subset_pool_takes_evenly_spaced_frames_of_one_sequence_or_all(tmp_path):
    from camvid_heldout import evenly_spaced, parse_subset, write_subset

    # ⌊(2i+1)·n / 2k⌋ by hand: n = 10, k = 5 → 1, 3, 5, 7, 9; n = 7, k = 3 → 1, 3, 5
    assert evenly_spaced(list(range(10)), 5) == [1, 3, 5, 7, 9]
    assert evenly_spaced(list(range(7)), 3) == [1, 3, 5]
    assert evenly_spaced(list(range(4)), 4) == [0, 1, 2, 3]
    with pytest.raises(SystemExit, match="ask for 1 to 4"):
        evenly_spaced(list(range(4)), 5)
    pool = tmp_path / "pool_new"
    pool.mkdir()
    names = [f"0001TP_{i}" for i in range(4)] + [f"0016E5_{i}" for i in range(6)]
    for name in names:
        (pool / f"{name}.png").write_bytes(name.encode())
    assert write_subset(tmp_path, "half", "50%") == 5
    assert write_subset(tmp_path, "onedrive", "3", "0016E5") == 3
    assert write_subset(tmp_path, "quarter", "25%") == 3  # 2.5 rounds up
    assert sorted(p.stem for p in (tmp_path / "pool_half").iterdir()) == [
        "0001TP_1", "0001TP_3", "0016E5_1", "0016E5_3", "0016E5_5"]  # fmt: skip
    assert sorted(p.stem for p in (tmp_path / "pool_onedrive").iterdir()) == [
        "0016E5_1", "0016E5_3", "0016E5_5"]  # fmt: skip
    assert (tmp_path / "pool_half" / "0001TP_1.png").read_bytes() == b"0001TP_1"
    assert parse_subset("onedrive=50%:0016E5") == ("onedrive", "50%", "0016E5")
    assert parse_subset("half=184") == ("half", "184", None)
    with pytest.raises(SystemExit, match="NAME=COUNT"):
        parse_subset("half_1=9")


def test_a_table_cell_is_the_mean_and_sample_spread_or_the_value_of_one_seed():
    from camvid_finetune import mean_and_spread

    assert mean_and_spread([28.94]) == "28.9"  # one seed has no spread to print
    assert mean_and_spread([-1.26], sign="+") == "-1.3"
    # 30.2, 30.2, 31.0: mean 30.47, sample sd sqrt(((-0.27)^2 * 2 + 0.53^2) / 2) = 0.46
    assert mean_and_spread([30.2, 30.2, 31.0]) == "30.5 ± 0.5"
    assert mean_and_spread([1.0, 3.0], sign="+") == "+2.0 ± 1.4"
