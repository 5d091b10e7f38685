"""`eval detect` with a pretrained FPN and box head: the v2 detector against torchvision's own
v2 builders, a tiny SoCo run's heads landing in it, and the v1/v2 choice of the command line."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2, maskrcnn_resnet50_fpn_v2

from densessl.cli import main
from densessl.eval.detection import (
    HEAD_PREFIXES,
    HeadWidths,
    build_detector,
    has_v2_heads,
    load_detection_weights,
    load_extra_state,
)
from densessl.runs import load_checkpoint

from conftest import TINY_FPN_RUN, tiny_overrides

SIZE = 64
# test_soco's tiny SoCo: ResNet-18 at 64 px, 16-channel FPN and head convs, fc 32.
SOCO = {
    **TINY_FPN_RUN,
    "steps": 2,
    "method.head_fc_dim": 32,
    "method.level_thresholds": "[12,24,48,64]",
}
TINY_WIDTHS = HeadWidths(fpn=16, box_convs=(16,) * 4, box_fc=32)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def soco_run(module_tmp_path):
    out = module_tmp_path / "soco_run"
    values = {"out": str(out), **SOCO}
    assert main(["pretrain", "--method", "soco", *(f"{k}={v}" for k, v in values.items())]) == 0
    return out


@pytest.fixture(scope="module")
def coco(module_tmp_path):
    out = module_tmp_path / "coco"
    assert main(["data", "synthetic", "--out", str(out), "--format", "coco",
                 "--num-images", "8", "--image-size", str(SIZE)]) == 0  # fmt: skip
    return out


# ---------------------------------------------------------------- the v2 layout


@pytest.mark.parametrize(
    ("model", "reference"),
    [("faster_rcnn", fasterrcnn_resnet50_fpn_v2), ("mask_rcnn", maskrcnn_resnet50_fpn_v2)],
)
def test_v2_r50_detector_has_torchvision_v2_keys_and_shapes(model, reference):
    ours = build_detector(None, 7, arch="resnet50", model=model, norm="bn", heads="v2")
    theirs = reference(weights=None, weights_backbone=None, num_classes=7)  # nothing downloaded
    assert shapes(ours) == shapes(theirs)
    # Frozen trunk norms only drop the trunk's num_batches_tracked; the FPN/head BN stay BN.
    frozen = build_detector(None, 7, arch="resnet50", model=model, norm="frozen", heads="v2")
    expected = {
        k: v
        for k, v in shapes(theirs).items()
        if not (k.startswith("backbone.body.") and k.endswith("num_batches_tracked"))
    }
    assert shapes(frozen) == expected
    for part in (frozen.backbone.fpn, frozen.roi_heads.box_head):
        norms = [m for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(p.requires_grad for m in norms for p in m.parameters())


def test_head_widths_and_layout_detection():
    v1 = build_detector(None, 5, min_size=SIZE, max_size=SIZE).state_dict()
    v2 = build_detector(None, 5, heads="v2", widths=TINY_WIDTHS, min_size=SIZE, max_size=SIZE)
    v2_state = v2.state_dict()
    assert not has_v2_heads(v1) and has_v2_heads(v2_state)
    assert HeadWidths.of(v2_state) == TINY_WIDTHS
    assert HeadWidths.of({}) == HeadWidths()  # torchvision's 256 / 4 x 256 / 1024


def test_v2_mask_rcnn_trains_with_narrow_heads():
    torch.manual_seed(0)
    detector = build_detector(
        None, 5, model="mask_rcnn", norm="bn", heads="v2", widths=TINY_WIDTHS,
        min_size=SIZE, max_size=SIZE,
        detector_options={"rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 16},
    )  # fmt: skip
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    masks[0, 8:40, 8:40] = 1
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2]),
              "masks": masks}  # fmt: skip
    losses = detector([torch.rand(3, SIZE, SIZE)] * 2, [target] * 2)  # BN needs two images
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------- pretrained heads


def test_soco_run_heads_land_in_the_v2_detector(soco_run):
    backbone, heads = load_detection_weights(soco_run)
    assert heads and all(k.startswith(HEAD_PREFIXES) for k in heads)
    assert has_v2_heads(heads) and HeadWidths.of(heads) == TINY_WIDTHS
    detector = build_detector(backbone, 5, heads="v2", widths=HeadWidths.of(heads),
                              min_size=SIZE, max_size=SIZE)  # fmt: skip
    assert load_extra_state(detector, heads) == sorted(heads)  # every tensor found its place
    trained = load_checkpoint(soco_run / "checkpoints" / "last.pt")["model"]
    fpn, box_head = detector.backbone.fpn, detector.roi_heads.box_head
    pairs = {  # source name in the run -> where torchvision's v2 detector keeps it
        "student.fpn.lateral_convs.1.norm.running_mean": fpn.inner_blocks[1][1].running_mean,
        "student.fpn.lateral_convs.3.conv.weight": fpn.inner_blocks[3][0].weight,
        "student.fpn.output_convs.0.norm.bias": fpn.layer_blocks[0][1].bias,
        "student.box_head.convs.2.conv.weight": box_head[2][0].weight,
        "student.box_head.convs.3.norm.running_var": box_head[3][1].running_var,
        "student.box_head.fc.weight": box_head[5].weight,
        "student.box_head.fc.bias": box_head[5].bias,
        "student.backbone.layer4.1.conv2.weight": detector.backbone.body.layer4[1].conv2.weight,
    }
    for key, value in pairs.items():
        assert torch.equal(trained[key], value), key
    _, teacher = load_detection_weights(soco_run, network="teacher")
    assert set(teacher) == set(heads)


def test_torchvision_detection_export_gives_the_same_weights(soco_run, tmp_path):
    out = tmp_path / "tv.pt"
    assert main(["export", str(soco_run), "--format", "torchvision_detection",
                 "--out", str(out)]) == 0  # fmt: skip
    backbone, heads = load_detection_weights(out)
    run_backbone, run_heads = load_detection_weights(soco_run)
    assert backbone.arch == "resnet18" and heads.keys() == run_heads.keys()
    assert all(torch.equal(heads[k], run_heads[k]) for k in heads)
    assert all(torch.equal(v, run_backbone.state_dict()[k])
               for k, v in backbone.state_dict().items())  # fmt: skip


def test_plain_backbones_have_no_heads(tmp_path):
    out = tmp_path / "random.pt"
    torch.save(load_detection_weights("random", "resnet18")[0].state_dict(), out)
    assert load_detection_weights(out)[1] == {}
    assert load_detection_weights("random", "resnet18")[1] == {}


# ---------------------------------------------------------------- the command line


def _detect(weights, coco, report, *extra) -> dict:
    args = ["eval", "detect", "--weights", str(weights), "--data", str(coco),
            "--iterations", "2", "--min-size", str(SIZE), "--max-size", str(SIZE),
            "--workers", "0", "--json", str(report), *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads(report.read_text())


def test_eval_detect_starts_from_the_soco_heads(soco_run, coco, tmp_path, capsys):
    scores = _detect(soco_run, coco, tmp_path / "v2.json")
    assert scores["heads"] == "v2" and scores["iterations"] == 2
    used = scores["extra_keys_used"]
    assert used and any(k.startswith("roi_heads.box_head.") for k in used)
    assert any(k.startswith("backbone.fpn.") for k in used)
    assert f"v2 heads, {len(used)} pretrained tensors loaded" in capsys.readouterr().out
    v1 = _detect(soco_run, coco, tmp_path / "v1.json", "--heads", "v1", "--norm", "frozen")
    assert v1["heads"] == "v1" and v1["extra_keys_used"] == []
    assert "are not used" in capsys.readouterr().out


def test_eval_detect_of_a_densecl_run_keeps_v1(coco, tmp_path):
    run = tmp_path / "densecl_run"
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(run, steps=2)]) == 0
    scores = _detect(run, coco, tmp_path / "det.json", "--norm", "frozen")
    assert scores["heads"] == "v1" and scores["extra_keys_used"] == []
