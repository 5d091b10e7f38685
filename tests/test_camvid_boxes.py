"""benchmarks/camvid_boxes.py: COCO boxes from hand-drawn CamVid label maps (merged, touching,
split and tiny components), read back by ``eval detect``'s loader; and per-class box AP
against a hand computation."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from densessl.eval.detection import open_coco
from densessl.eval.detection.coco_eval import coco_ap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from camvid_boxes import boxes_of, write_split

ROAD, SIGN, CAR, PEDESTRIAN, VOID = 3, 6, 8, 9, 11


def label_map() -> np.ndarray:
    """A 40 x 60 label map drawn by hand; the expected boxes are written out in the test."""
    label = np.full((40, 60), ROAD, np.uint8)
    label[2:12, 3:13] = CAR  # car A: 10 x 10 at x 3, y 2
    label[20:30, 40:55] = CAR  # car B, cut by a pole (column 47 road) into two components
    label[20:30, 47] = ROAD
    label[25:35, 5:9] = PEDESTRIAN  # two pedestrians side by side: one component, one box
    label[27:35, 9:12] = PEDESTRIAN
    label[12, 13] = CAR  # touches car A only at a corner: 8-connected, so it is car A's
    label[0:3, 30:33] = SIGN  # 9 pixels: a tiny sign, an ignore region
    label[5:8, 30:33] = VOID  # void is no class
    return label


def test_boxes_follow_the_stated_rule():
    annotations = boxes_of(label_map())
    got = sorted((a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in annotations)
    assert got == [
        (SIGN, [30, 0, 3, 3], 9, 1),  # under 50 pixels: ignored, not taught, not scored
        (CAR, [3, 2, 11, 11], 101, 0),  # 10 x 10 + the corner pixel at (13, 12)
        (CAR, [40, 20, 7, 10], 70, 0),  # the part left of the pole
        (CAR, [48, 20, 7, 10], 70, 0),  # the part right of it
        (PEDESTRIAN, [5, 25, 7, 10], 40 + 24, 0),  # touching: one box over both
    ]
    assert boxes_of(label_map(), min_area=5)[0]["iscrowd"] == 0


def test_written_split_is_what_eval_detect_reads(tmp_path):
    data = tmp_path / "camvid"
    for folder in ("train", "trainannot"):
        (data / folder).mkdir(parents=True)
    Image.fromarray(label_map()).save(data / "trainannot" / "0001TP_1.png")
    Image.new("RGB", (60, 40)).save(data / "train" / "0001TP_1.png")
    Image.new("RGB", (60, 40)).save(data / "train" / "0001TP_2.png")  # no label: left out
    counts = write_split(data, "train", tmp_path / "boxes")
    assert counts == {"images": 1, "boxes": 4, "ignored": 1}
    assert (tmp_path / "boxes" / "train" / "images" / "0001TP_1.png").is_symlink()
    dataset = open_coco(tmp_path / "boxes", "train")
    assert dataset.class_names == ["background", "SignSymbol", "Car", "Pedestrian", "Bicyclist"]
    _, target = dataset[0]
    assert len(target["boxes"]) == 4  # the ignore region is not a training box


def test_per_class_ap_is_each_category_on_its_own(tmp_path):
    """Cars found exactly, the pedestrian missed: Car AP 100, Pedestrian AP 0, mean 50;
    the sign has no ground truth, so its AP is NaN and stays out of the mean."""
    data = tmp_path / "camvid"
    for folder in ("val", "valannot"):
        (data / folder).mkdir(parents=True)
    label = np.full((40, 60), ROAD, np.uint8)
    label[2:12, 3:13] = CAR
    label[20:30, 40:55] = CAR
    label[20:35, 5:9] = PEDESTRIAN  # 60 pixels: scored
    Image.fromarray(label).save(data / "valannot" / "a.png")
    Image.new("RGB", (60, 40)).save(data / "val" / "a.png")
    write_split(data, "val", tmp_path / "boxes")
    dataset = open_coco(tmp_path / "boxes", "val")
    truth = json.loads((tmp_path / "boxes" / "val" / "annotations.json").read_text())
    results = [
        {"image_id": a["image_id"], "category_id": CAR, "bbox": a["bbox"], "score": 0.9}
        for a in truth["annotations"]
        if a["category_id"] == CAR
    ]
    ap, ap50, _, per_class = coco_ap(dataset, results, "bbox")
    assert per_class["Car"] == 100.0 and per_class["Pedestrian"] == 0.0
    assert math.isnan(per_class["SignSymbol"]) and math.isnan(per_class["Bicyclist"])
    assert ap == ap50 == 50.0  # COCOeval's mean over the two categories with ground truth
