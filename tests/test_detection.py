"""COCO export / loading and the detection fine-tune, on tiny synthetic sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from densessl.data.synthetic import SyntheticScenes
from densessl.errors import DataError
from densessl.eval.detection import (
    CocoDetection,
    DetectionScores,
    DetectOptions,
    build_detector,
    finetune_detector,
    learning_rate,
    load_extra_state,
    open_coco,
    write_synthetic_coco,
)
from densessl.eval.scene_export import held_out_seed
from densessl.models.backbones import ResNetBackbone

SIZE = 64
# Far fewer proposals, sampled RoIs and detections than torchvision's defaults: the RoI heads,
# not the trunk, dominate a CPU step at this size.
SMALL_HEADS = {
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 10,
}


@pytest.fixture(scope="module")
def coco_root(module_tmp_path):
    # 16 train scenes, 4 held-out val scenes.
    return write_synthetic_coco(module_tmp_path / "coco", num_images=16, image_size=SIZE)


def _document(root, split):
    return json.loads((root / split / "annotations.json").read_text())


def test_written_annotations_are_the_scenes(coco_root):
    document = _document(coco_root, "train")
    assert [c["name"] for c in document["categories"]] == list(SyntheticScenes.class_names[1:])
    assert [c["id"] for c in document["categories"]] == [1, 2, 3, 4]
    scenes = SyntheticScenes(16, SIZE, seed=0)
    for info in document["images"]:
        scene = scenes.scene(info["id"] - 1)
        anns = [a for a in document["annotations"] if a["image_id"] == info["id"]]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        expected = scene.boxes.copy()
        expected[:, 2:] -= expected[:, :2]  # xyxy -> xywh
        np.testing.assert_array_equal(boxes, expected)
        assert [a["category_id"] for a in anns] == scene.labels.tolist()
        assert all(a["iscrowd"] == 0 for a in anns)
        masks = mask_utils.decode([a["segmentation"] for a in anns])  # (H, W, M)
        np.testing.assert_array_equal(masks.transpose(2, 0, 1).astype(bool), scene.instance_masks)
        assert [a["area"] for a in anns] == scene.instance_masks.sum((1, 2)).tolist()
    ids = [a["id"] for a in document["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_val_is_held_out_and_manifest(coco_root):
    manifest = json.loads((coco_root / "densessl_dataset.json").read_text())
    assert manifest["format"] == "coco" and manifest["task"] == "detection"
    assert manifest["classes"] == list(SyntheticScenes.class_names)
    assert manifest["splits"] == ["train", "val"]
    val = _document(coco_root, "val")
    assert len(val["images"]) == 4
    held_out = SyntheticScenes(4, SIZE, seed=held_out_seed(0))
    train = open_coco(coco_root, "train")
    val_set = open_coco(coco_root, "val")
    for i in range(4):
        image, _ = val_set[i]
        expected = torch.from_numpy(held_out.scene(i).image).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, expected)
        assert not any(torch.equal(image, train[j][0]) for j in range(len(train)))


def test_open_coco_errors(tmp_path, coco_root):
    with pytest.raises(DataError, match="not found"):
        open_coco(tmp_path / "missing")
    with pytest.raises(DataError, match="no COCO annotations for split 'test'"):
        open_coco(coco_root, "test")
    with pytest.raises(DataError, match="holds other files"):
        (tmp_path / "stray.txt").write_text("x")
        write_synthetic_coco(tmp_path)


def test_official_layout(tmp_path, coco_root):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        (coco_root / "val" / "annotations.json").read_text()
    )
    (tmp_path / "val2017").symlink_to(coco_root / "val" / "images")
    assert len(open_coco(tmp_path, "val")) == 4


def test_target_format_and_contiguous_labels(tmp_path, coco_root):
    # Sparse category ids (as COCO's 1..90) must become labels 1..C in id order.
    document = _document(coco_root, "train")
    remap = {1: 7, 2: 3, 3: 40, 4: 12}
    for category in document["categories"]:
        category["id"] = remap[category["id"]]
    for annotation in document["annotations"]:
        annotation["category_id"] = remap[annotation["category_id"]]
    document["annotations"][0]["iscrowd"] = 1
    document["annotations"][1]["bbox"] = [5.0, 5.0, 0.0, 4.0]  # degenerate
    path = tmp_path / "sparse.json"
    path.write_text(json.dumps(document))
    dataset = CocoDetection(coco_root / "train" / "images", path, with_masks=True)
    assert dataset.category_ids == [3, 7, 12, 40]
    assert dataset.class_names == ["background", "square", "disc", "ring", "triangle"]
    assert dataset.num_classes == 5
    image, target = dataset[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    scene = SyntheticScenes(16, SIZE, seed=0).scene(0)
    m = len(scene.labels) - 2  # the crowd and the degenerate annotation are dropped
    assert target["boxes"].shape == (m, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (m,)
    assert target["masks"].shape == (m, SIZE, SIZE) and target["masks"].dtype == torch.uint8
    torch.testing.assert_close(target["boxes"], torch.from_numpy(scene.boxes[2:]))
    label_of = {7: 2, 3: 1, 40: 4, 12: 3}
    expected = [label_of[remap[int(c)]] for c in scene.labels[2:]]
    assert target["labels"].tolist() == expected
    assert torch.equal(target["masks"].bool(), torch.from_numpy(scene.instance_masks[2:]))
    assert target["image_id"] == 1


def test_backbone_weights_land_in_the_trunk():
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18")
    with torch.no_grad():
        backbone.bn1.running_mean.normal_()
    for norm in ("frozen", "bn"):
        detector = build_detector(backbone, 5, norm=norm, min_size=64, max_size=64)
        body = detector.backbone.body
        assert torch.equal(body.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)
        assert torch.equal(body.bn1.running_mean, backbone.bn1.running_mean)
    random = build_detector(None, 5, arch="resnet18", min_size=64, max_size=64)
    assert not torch.equal(
        random.backbone.body.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight
    )
    with pytest.raises(ValueError, match="differs"):
        build_detector(backbone, 5, arch="resnet50")


def test_extra_state_loads_fpn_and_refuses_trunk_keys():
    detector = build_detector(None, 5, min_size=64, max_size=64)
    key = "backbone.fpn.inner_blocks.0.0.weight"
    weight = torch.randn_like(detector.state_dict()[key])
    used = load_extra_state(
        detector, {key: weight, "roi_heads.box_predictor.cls_score.weight": torch.zeros(3, 3)}
    )
    assert used == [key]
    assert torch.equal(detector.state_dict()[key], weight)
    with pytest.raises(ValueError, match="trunk"):
        load_extra_state(detector, {"backbone.body.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="fits"):
        load_extra_state(detector, {"fpn.whatever": torch.zeros(1)})


def test_learning_rate_schedule():
    lrs = [learning_rate(i, 0.02, 900) for i in range(900)]
    assert lrs[0] == pytest.approx(0.02 * 0.001)
    assert lrs[45] == pytest.approx(0.02)  # warm-up is 5% of a short run
    assert lrs[599] == pytest.approx(0.02) and lrs[600] == pytest.approx(0.002)
    assert lrs[800] == pytest.approx(0.0002)


def _check_ap(*values):
    for value in values:
        assert 0.0 <= value <= 100.0 or math.isnan(value)


def test_finetune_faster_rcnn_on_cpu(coco_root):
    torch.manual_seed(0)
    scores = finetune_detector(
        ResNetBackbone("resnet18"),
        coco_root,
        DetectOptions(
            model="faster_rcnn",
            iterations=3,
            min_size=[SIZE],
            max_size=SIZE,
            norm="frozen",
            device="cpu",
            workers=0,
            detector_options=SMALL_HEADS,
        ),
    )
    assert isinstance(scores, DetectionScores) and scores.iterations == 3
    _check_ap(scores.box_ap, scores.box_ap50, scores.box_ap75)
    assert scores.mask_ap is None
    assert set(scores.to_dict()) >= {"box_ap", "box_ap50", "box_ap75", "mask_ap", "iterations"}
    assert "box" in scores.format_table()


def test_finetune_mask_rcnn_on_cpu(coco_root):
    scores = finetune_detector(
        None,
        coco_root,
        DetectOptions(
            model="mask_rcnn",
            iterations=3,
            min_size=[SIZE],
            max_size=SIZE,
            norm="bn",
            device="cpu",
            workers=0,
            detector_options=SMALL_HEADS,
        ),
    )
    _check_ap(scores.box_ap, scores.mask_ap, scores.mask_ap50, scores.mask_ap75)
    assert "mask" in scores.format_table()
