"""SoCo: the box loss against the reference's formulation, boxes through crop/flip/resize,
one training step, the EMA target, the CLI run and its exports."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from densessl.cli import main
from densessl.config import build_config
from densessl.data.batch import collate_views
from densessl.data.batch_augment import apply_box_cutout, augment_batch
from densessl.data.box_views import (
    BoxViewsSpec,
    BoxViewsTransform,
    clip_boxes,
    jitter_boxes,
    overlapping,
)
from densessl.data.pretrain import MultiViewDataset
from densessl.data.synthetic import SyntheticScenes
from densessl.losses import box_pair_loss
from densessl.methods import build_method, get_method
from densessl.runs import load_checkpoint

from conftest import TINY_FPN_RUN, assert_target_moves_only_by_ema, state_at, write_scene_folder
from reference.plain_byol import plain_byol_loss
from reference.plain_soco import reference_regression_loss
from tiny_methods import SceneBoxes

TINY = {
    **TINY_FPN_RUN,
    "method.head_fc_dim": 32,
    "method.level_thresholds": "[12,24,48,64]",  # the 48/96/192/224 rule scaled to 64-px views
}


def overrides(out, **extra) -> list[str]:
    values = {"out": str(out), **TINY, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def tiny_soco(tmp_path, steps: int = 10, **extra):
    cfg = build_config(get_method("soco"), overrides=overrides(tmp_path, **extra))
    torch.manual_seed(0)
    return build_method(cfg)


def soco_batch(method, n: int = 4):
    scenes = SyntheticScenes(num_images=n, image_size=80)
    dataset = MultiViewDataset(scenes, method.make_transform(), 0, SceneBoxes(scenes))
    return augment_batch(collate_views([dataset[(0, i)] for i in range(n)]))


# ---------------------------------------------------------------- the loss


def test_box_pair_loss_matches_the_reference_slots():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, 8, generator=generator, dtype=torch.float64)
    target = torch.randn(3, 4, 8, generator=generator, dtype=torch.float64)
    # padding duplicates: ids repeat, differently in the two views
    pred_ids = torch.tensor([[0, 1, 2, 0], [5, 5, 5, 5], [0, 1, 2, 3]])
    target_ids = torch.tensor([[1, 0, 2, 2], [5, 5, 5, 5], [3, 2, 1, 0]])
    levels_a = torch.randint(0, 4, (3, 4), generator=generator)
    levels_b = torch.randint(0, 4, (3, 4), generator=generator)
    expected = reference_regression_loss(pred, target, pred_ids, target_ids, levels_a, levels_b)
    got = box_pair_loss(pred, target, pred_ids, target_ids).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_box_pair_loss_without_duplicates_is_byol_minus_two():
    pred, target = (
        torch.randn(2, 4, 8, dtype=torch.float64),
        torch.randn(2, 4, 8, dtype=torch.float64),
    )
    ids = torch.arange(4).expand(2, 4)
    expected = plain_byol_loss(pred.reshape(8, 8), target.reshape(8, 8)) - 2
    assert box_pair_loss(pred, target, ids, ids).item() == pytest.approx(expected, abs=1e-6)
    unmatched = box_pair_loss(pred, target, ids, ids + 10)  # nothing matches: 0 / (0 + 1e-6)
    assert unmatched.item() == 0.0


# ---------------------------------------------------------------- boxes and views


def test_clip_and_overlap_hand_cases():
    boxes = torch.tensor([[30.0, 20.0, 90.0, 40.0], [0.0, 0.0, 20.0, 10.0], [70.0, 0, 80, 5]])
    window = (20.0, 10.0, 70.0, 60.0)
    assert overlapping(boxes, window).tolist() == [True, False, False]  # touching is not overlap
    torch.testing.assert_close(clip_boxes(boxes[:1], window), torch.tensor([[30.0, 20, 70, 40]]))


def test_jitter_bounds_and_probability():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]]).repeat(200, 1).double()
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(jitter_boxes(boxes, 0.0, 0.1, generator), boxes)
    moved = jitter_boxes(boxes, 1.0, 0.1, generator)
    w, h = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
    assert ((moved[:, 0] - 10).abs() <= 4 + 1e-9).all() and ((moved[:, 1] - 20).abs() <= 2).all()
    assert ((w >= 36 - 1e-9) & (w <= 44 + 1e-9) & (h >= 18 - 1e-9) & (h <= 22 + 1e-9)).all()
    assert (moved != boxes).any(dim=1).all()


def hand_to_view(box, window, size, flipped):
    """x' = (x − wx0)·size/ww, mirrored as size − x' when flipped; same for y (no mirror)."""
    x0, y0, x1, y1 = box
    wx0, wy0, wx1, wy1 = window
    sx, sy = size / (wx1 - wx0), size / (wy1 - wy0)
    ax, bx = (x0 - wx0) * sx, (x1 - wx0) * sx
    if flipped:
        ax, bx = size - bx, size - ax
    return [ax, (y0 - wy0) * sy, bx, (y1 - wy0) * sy]


@pytest.mark.parametrize("seed", range(6))
def test_single_proposal_lands_where_hand_geometry_puts_it(seed):
    """One proposal, no jitter: all K slots hold it (padding), V1 shows it whole, V2/V3 show its
    part inside their crop window, each mapped by crop, resize and (if drawn) flip."""
    image = Image.new("RGB", (100, 80))
    proposal = [30.0, 20.0, 90.0, 60.0]
    spec = BoxViewsSpec(size=50, small_size=30, jitter_p=0.0, boxes_per_pair=4)
    out = BoxViewsTransform(spec)(image, torch.Generator().manual_seed(seed), np.array([proposal]))
    boxes, ids = out.extras["boxes"], out.extras["box_ids"]
    assert boxes.shape == (2, 2, 4, 4) and ids.tolist() == [[[0] * 4] * 2] * 2
    for p, b in enumerate((1, 2)):
        for side, view in ((0, out.views[0]), (1, out.views[b])):
            g = view.geometry
            low = [max(a, c) for a, c in zip(proposal[:2], g.crop_box[:2], strict=True)]
            high = [min(a, c) for a, c in zip(proposal[2:], g.crop_box[2:], strict=True)]
            visible = low + high
            want = hand_to_view(visible, g.crop_box, g.output_size[0], g.flipped)
            for slot in range(4):
                assert boxes[p, side, slot].tolist() == pytest.approx(want, abs=1e-4)
    assert out.views[0].geometry.crop_box == (0.0, 0.0, 100.0, 80.0)  # V1 = whole image
    assert [v.pixels.shape[-1] for v in out.views] == [50, 50, 30]


@pytest.mark.parametrize("seed", range(4))
def test_every_box_maps_back_to_its_proposal_inside_each_view(seed):
    scenes = SyntheticScenes(num_images=4, image_size=96)
    proposals = torch.as_tensor(scenes.scene(seed).boxes).double()
    spec = BoxViewsSpec(size=48, small_size=24, jitter_p=0.0, cutout_p=0.5)
    out = BoxViewsTransform(spec)(scenes.load_image(seed),
                                  torch.Generator().manual_seed(seed), proposals)  # fmt: skip
    for p, (a, b) in enumerate(spec.pairs):
        for side, v in ((0, a), (1, b)):
            g = out.views[v].geometry
            back = g.box_to_source(out.extras["boxes"][p, side].double())
            ids = out.extras["box_ids"][p, side]
            torch.testing.assert_close(back, clip_boxes(proposals[ids], g.crop_box), atol=1e-3,
                                       rtol=0)  # fmt: skip
            assert overlapping(proposals[ids], g.crop_box).all()
        # every id of one view occurs in the other (padding only duplicates shared boxes)
        assert set(out.extras["box_ids"][p, 0].tolist()) == set(
            out.extras["box_ids"][p, 1].tolist()
        )
    cut = out.extras["cutout"]
    assert cut.shape == (3, 4, 4) and (cut[0] == 0).all()  # never in V1


def test_soco_star_adds_v4_with_v2s_window_and_slots():
    spec = BoxViewsSpec(size=48, small_size=40, extra_size=24, jitter_p=0.0)
    image = SyntheticScenes(2, 96).load_image(1)
    proposals = SyntheticScenes(2, 96).scene(1).boxes
    out = BoxViewsTransform(spec)(image, torch.Generator().manual_seed(3), proposals)
    assert [v.pixels.shape[-1] for v in out.views] == [48, 48, 40, 24]
    assert out.views[3].geometry.crop_box == out.views[1].geometry.crop_box
    ids = out.extras["box_ids"]
    assert torch.equal(ids[2], ids[0]) and torch.equal(
        out.extras["boxes"][2, 0], out.extras["boxes"][0, 0]
    )


def test_cutout_zeroes_pixels_whose_centres_are_inside():
    images = torch.ones(1, 2, 5, 6)
    rects = torch.tensor([[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    out = apply_box_cutout(images, rects)
    expected = torch.ones(5, 6)
    expected[1:3, 1:3] = 0
    assert torch.equal(out[0, 0], expected) and torch.equal(out[0, 1], expected)


# ---------------------------------------------------------------- the method


def test_one_step_on_cpu(tmp_path):
    method = tiny_soco(tmp_path)
    batch = soco_batch(method)
    assert [v.shape[-1] for v in batch.views] == [64, 64, 32]
    assert batch.extras["boxes"].shape == (4, 2, 2, 4, 4)
    out = method(batch, state_at(method, 0))
    assert torch.isfinite(out.loss)  # its value: recomputed from the parts in test_wiring.py
    assert set(out.logs) == {"loss_v1v2", "loss_v1v3"}
    out.loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())


def test_target_only_moves_by_ema(tmp_path):
    method = tiny_soco(tmp_path, steps=10)
    assert_target_moves_only_by_ema(method, soco_batch(method), 0, 0.99, 10)


def test_assigned_level_pooling_gives_the_reference_loss_in_eval_mode(tmp_path):
    """With BN on running statistics, one head pass over each box's assigned level and the
    reference's per-level passes over every box give the same loss."""
    assigned = tiny_soco(tmp_path, **{"method.roi_levels": "assigned"})
    every = tiny_soco(tmp_path, **{"method.roi_levels": "all"})
    every.load_state_dict(assigned.state_dict())
    batch = soco_batch(assigned)
    assigned.eval()
    every.eval()
    with torch.no_grad():
        a, b = assigned(batch, 0).loss.item(), every(batch, 0).loss.item()
    assert a == pytest.approx(b, abs=1e-5)


def test_recipe_and_views_follow_the_reference_scripts(tmp_path):
    cfg = build_config(get_method("soco"), overrides=[f"out={tmp_path}"])
    assert cfg.optim.name == "lars" and cfg.optim.base_lr == 1.0 and cfg.optim.weight_decay == 1e-5
    assert cfg.optim.decay_norm_and_bias is False and cfg.optim.warmup_epochs == 10
    assert cfg.batch_size == 2048 and cfg.method.momentum == 0.99
    star = tiny_soco(tmp_path, **{"method.star": True, "data.image_size": 224})
    assert star.box_views_spec().view_sizes == [224, 224, 192, 112]


def test_every_residual_block_starts_with_a_zero_bn3_scale(tmp_path):
    # contrast/resnet.py zeroes every parameter named "bn3.weight" (bottlenecks) or
    # "bn2.weight" (basic blocks) after its init; the tiny run is a ResNet-18.
    method = tiny_soco(tmp_path)
    for network in (method.student, method.teacher):
        zeroed = [n for n, p in network.backbone.named_parameters()
                  if n.endswith("weight") and not p.any()]  # fmt: skip
        expected = [f"layer{i}.{j}.bn2.weight" for i in range(1, 5) for j in range(2)]
        assert zeroed == expected
    r50 = tiny_soco(tmp_path, backbone="resnet50")
    zeroed = {n for n, p in r50.student.backbone.named_parameters()
              if n.endswith("weight") and not p.any()}  # fmt: skip
    assert len(zeroed) == 16 and all(n.endswith(".bn3.weight") for n in zeroed)


def test_projector_and_predictor_keep_their_last_bias(tmp_path):
    # contrast/models/mlps.py MLP: both Linears have a bias (BYOL's reference drops the last).
    method = tiny_soco(tmp_path)
    for mlp in (method.student.projector.mlp, method.predictor.mlp):
        assert mlp[-1].bias is not None


def test_soco_star_has_no_cutout(tmp_path):
    # SoCo*'s augmentation (ImageAsymBboxAwareMulti3ResizeExtraJitter1) applies no cutout,
    # even though its script passes --cutout_prob 0.5; the 100-epoch SoCo keeps p 0.5.
    plain = tiny_soco(tmp_path)
    star = tiny_soco(tmp_path, **{"method.star": True})
    assert plain.box_views_spec().cutout_p == 0.5
    assert star.box_views_spec().cutout_p == 0.0
    assert "cutout" not in soco_batch(star).extras
    assert "cutout" in soco_batch(plain).extras


# ---------------------------------------------------------------- CLI run and exports


@pytest.fixture(scope="module")
def soco_run(module_tmp_path):
    out = module_tmp_path / "soco_run"
    assert main(["pretrain", "--method", "soco", *overrides(out, steps=2)]) == 0
    return out


def test_pretrain_soco_on_builtin_scenes(soco_run):
    state = load_checkpoint(soco_run / "checkpoints" / "last.pt")
    assert any(k.startswith("student.fpn.") for k in state["model"])
    assert (soco_run / "summary.json").exists()
    assert list(soco_run.glob("proposals_*.npz"))  # selective search ran and was cached


def test_pretrain_soco_on_an_image_folder(tmp_path):
    data = write_scene_folder(tmp_path / "images", 4, 80, seed=5)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "soco", "--data", str(data), *overrides(out, steps=1)]
    assert main(args) == 0
    assert (out / "checkpoints" / "last.pt").exists()


FPN_D2 = {f"fpn_{kind}{i}.{part}" for kind in ("lateral", "output") for i in range(2, 6)
          for part in ("weight", "norm.weight", "norm.bias", "norm.running_mean",
                       "norm.running_var")}  # fmt: skip
HEAD_D2 = {f"box_head.conv{k}.{part}" for k in range(1, 5)
           for part in ("weight", "norm.weight", "norm.bias", "norm.running_mean",
                        "norm.running_var")}  # fmt: skip
HEAD_D2 |= {"box_head.fc1.weight", "box_head.fc1.bias"}
BN_MM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
NECK_MM = {f"neck.{kind}.{i}.{part}" for kind in ("lateral_convs", "fpn_convs") for i in range(4)
           for part in ["conv.weight"] + [f"bn.{f}" for f in BN_MM]}  # fmt: skip
HEAD_MM = {f"roi_head.bbox_head.shared_convs.{k}.{part}" for k in range(4)
           for part in ["conv.weight"] + [f"bn.{f}" for f in BN_MM]} | {
    "roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.0.bias"}  # fmt: skip


def test_detectron2_export_adds_fpn_and_box_head(soco_run, tmp_path, capsys):
    out = tmp_path / "d2.pkl"
    assert main(["export", str(soco_run), "--format", "detectron2", "--out", str(out)]) == 0
    with open(out, "rb") as f:
        model = pickle.load(f)["model"]
    heads = {k for k in model if k.startswith(("fpn_", "box_head."))}
    assert heads == FPN_D2 | HEAD_D2
    assert all(k.startswith(("stem.", "res")) for k in set(model) - heads)
    state = load_checkpoint(soco_run / "checkpoints" / "last.pt")["model"]
    lateral = state["student.fpn.lateral_convs.1.norm.running_mean"]
    np.testing.assert_array_equal(model["fpn_lateral3.norm.running_mean"], lateral.numpy())
    np.testing.assert_array_equal(model["box_head.fc1.weight"],
                                  state["student.box_head.fc.weight"].numpy())  # fmt: skip
    assert 'NAME: "FastRCNNConvFCHead"' in capsys.readouterr().out


def test_mmdet_export_adds_neck_and_bbox_head(soco_run, tmp_path, capsys):
    out = tmp_path / "mm.pth"
    assert main(["export", str(soco_run), "--format", "mmdet", "--out", str(out)]) == 0
    state_dict = torch.load(out, weights_only=True)["state_dict"]
    heads = {k for k in state_dict if not k.startswith("backbone.")}
    assert heads == NECK_MM | HEAD_MM
    trained = load_checkpoint(soco_run / "checkpoints" / "last.pt")["model"]
    assert torch.equal(state_dict["roi_head.bbox_head.shared_convs.2.bn.weight"],
                       trained["student.box_head.convs.2.norm.weight"])  # fmt: skip
    assert f'load_from = "{out}"' in capsys.readouterr().out


def test_torchvision_detection_export_of_a_tiny_run(soco_run, tmp_path):
    out = tmp_path / "tv.pt"
    assert (
        main(["export", str(soco_run), "--format", "torchvision_detection", "--out", str(out)]) == 0
    )
    weights = torch.load(out, weights_only=True)
    assert "backbone.fpn.inner_blocks.0.1.running_var" in weights
    assert "roi_heads.box_head.5.weight" in weights
