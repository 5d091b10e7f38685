"""The data / eval / viz command lines, end to end on tiny synthetic sets (the CLI contract)."""

from __future__ import annotations

import json

import pytest

from densessl.cli import main
from densessl.data.synthetic import SyntheticScenes

from conftest import refused, tiny_overrides


@pytest.fixture(scope="module")
def seg_dir(module_tmp_path):
    out = module_tmp_path / "seg"
    assert main(["data", "synthetic", "--out", str(out), "--format", "seg",
                 "--num-images", "12", "--image-size", "64"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run_dir(module_tmp_path):
    out = module_tmp_path / "run"
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(out, steps=2)]) == 0
    return out


@pytest.mark.parametrize("probe", ["linear-seg", "knn-seg"])
def test_probe_on_a_written_synthetic_set_writes_json(seg_dir, tmp_path, probe, capsys):
    # No --format: the folder written by `data synthetic` is recognised by its manifest.
    report = tmp_path / "scores.json"
    args = ["eval", probe, "--weights", "random", "--backbone", "resnet18", "--data",
            str(seg_dir), "--image-size", "64", "--json", str(report)]  # fmt: skip
    assert main(args) == 0
    scores = json.loads(report.read_text())
    assert set(scores["per_class_iou"]) == set(SyntheticScenes.class_names)
    assert 0 <= scores["miou"] <= 100 and 0 <= scores["pixel_accuracy"] <= 100
    assert "mIoU" in capsys.readouterr().out


def test_probe_reads_a_run_directory(seg_dir, run_dir, tmp_path):
    report = tmp_path / "knn.json"
    args = ["eval", "knn-seg", "--weights", str(run_dir), "--data", str(seg_dir),
            "--image-size", "64", "--levels", "c4,c5", "--json", str(report)]  # fmt: skip
    assert main(args) == 0 and "miou" in json.loads(report.read_text())


def test_detect_on_synthetic_coco_reports_ap(tmp_path):
    coco = tmp_path / "coco"
    assert main(["data", "synthetic", "--out", str(coco), "--format", "coco",
                 "--num-images", "8", "--image-size", "64"]) == 0  # fmt: skip
    report = tmp_path / "det.json"
    args = ["eval", "detect", "--weights", "random", "--backbone", "resnet18", "--data",
            str(coco), "--iterations", "2", "--min-size", "64", "--max-size", "64",
            "--workers", "0", "--norm", "frozen", "--json", str(report)]  # fmt: skip
    assert main(args) == 0
    scores = json.loads(report.read_text())
    assert scores["iterations"] == 2 and 0 <= scores["box_ap"] <= 100
    assert scores["mask_ap"] is None


def test_bad_weights_exit_2_with_one_line(seg_dir, tmp_path, capsys):
    args = ["eval", "linear-seg", "--weights", str(tmp_path / "nothing.pt"), "--data",
            str(seg_dir)]  # fmt: skip
    assert "nothing.pt" in refused(capsys, args, tmp_path)


def test_bad_data_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["eval", "knn-seg", "--weights", "random", "--data", str(tmp_path / "empty")]
    assert "empty" in refused(capsys, args, tmp_path)


def test_viz_commands_write_pngs(run_dir, tmp_path):
    for args in (
        ["matches", "--weights", str(run_dir), "--size", "96"],
        ["pca", "--weights", str(run_dir), "--size", "64", "--count", "2"],
    ):
        out = tmp_path / f"{args[0]}.png"
        assert main(["viz", *args, "--out", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "loss.png"
    assert main(["viz", "loss", str(run_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
