"""MCL: the cell loss against a plain loop, windows against montage cells, the gathered loss under
two processes, one training step, the EMA target, the CLI run and its exports."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from densessl.cli import main
from densessl.config import build_config
from densessl.data.batch import collate_views
from densessl.data.batch_augment import augment_batch
from densessl.data.montage import mcl_level
from densessl.data.pretrain import MultiViewDataset
from densessl.data.synthetic import SyntheticScenes
from densessl.errors import ConfigError
from densessl.export.torchvision_detection import write_torchvision_detection
from densessl.losses import mcl_cell_loss
from densessl.methods import build_method, get_method
from densessl.methods.mcl import cross_branch_loss
from densessl.models.window_head import WindowHead, cut_windows
from densessl.runs import load_checkpoint

from conftest import (
    TINY_FPN_RUN,
    assert_target_moves_only_by_ema,
    free_port,
    state_at,
    v2_detector_states,
    write_scene_folder,
)
from reference.plain_mcl import plain_cell_loss, weighted_cell_loss

TINY = TINY_FPN_RUN


def overrides(out, **extra) -> list[str]:
    values = {"out": str(out), **TINY, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def tiny_mcl(tmp_path, steps: int = 10, **extra):
    cfg = build_config(get_method("mcl"), overrides=overrides(tmp_path, **extra))
    torch.manual_seed(0)
    return build_method(cfg)


def mcl_batch(method, n: int = 8):
    scenes = SyntheticScenes(num_images=n, image_size=80)
    dataset = MultiViewDataset(scenes, method.make_transform(), 0)
    return augment_batch(collate_views([dataset[(0, i)] for i in range(n)]))


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_cell_loss_matches_a_plain_loop(temperature):
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(11, 8, generator=generator) * 3
    targets = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    labels = torch.randint(0, 6, (11,), generator=generator)
    got = mcl_cell_loss(pred, targets, labels, temperature)
    assert got.item() == pytest.approx(
        plain_cell_loss(pred, targets, labels, temperature), rel=1e-5
    )


def test_cell_loss_closed_form_with_orthogonal_targets():
    # Cell = its target exactly, targets orthonormal: logits 1/T once and 0 (N-1 times), so
    # loss = 2T·(log(e^{1/T} + N − 1) − 1/T). At T = 1, N = 4: 2·(log(e + 3) − 1).
    targets = torch.eye(4)
    loss = mcl_cell_loss(targets * 5.0, targets, torch.arange(4), 1.0)
    assert loss.item() == pytest.approx(2 * (math.log(math.e + 3) - 1), rel=1e-6)


def _gather_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        preds, sources, targets = torch.load(os.path.join(out_dir, "inputs.pt"))
        mine = [p.chunk(2)[rank].clone().requires_grad_() for p in preds]
        local_sources = [s.chunk(2)[rank] for s in sources]  # local image indices 0..B-1
        local_targets = targets.chunk(2)[rank]
        loss, _ = cross_branch_loss(mine, local_sources, local_targets, (0.5, 0.25, 0.25), 1.0)
        loss.backward()
        result = (loss.detach(), [p.grad for p in mine])
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.mark.dist
def test_two_processes_give_the_loss_of_the_concatenated_batch(tmp_path):
    """Each rank holds B = 3 images: its cells, its sources (local indices) and its targets.
    The mean of the ranks' losses (what DDP's gradient averaging optimises) and their gradients
    must equal one process holding all 6 images, whose rank-1 sources are offset by B."""
    batch, dim = 3, 8
    generator = torch.Generator().manual_seed(1)
    # Per level, 2·n cells: the first n belong to rank 0, the rest to rank 1.
    preds = [torch.randn(2 * n, dim, generator=generator, dtype=torch.float64) for n in (3, 4, 8)]
    sources = [torch.randint(0, batch, (2 * n,), generator=generator) for n in (3, 4, 8)]
    targets = F.normalize(torch.randn(2 * batch, dim, generator=generator, dtype=torch.float64))
    torch.save((preds, sources, targets), tmp_path / "inputs.pt")
    mp.spawn(_gather_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    whole = [p.clone().requires_grad_() for p in preds]
    offsets = [torch.cat([s.chunk(2)[0], s.chunk(2)[1] + batch]) for s in sources]
    loss = weighted_cell_loss(whole, offsets, targets, (0.5, 0.25, 0.25), 1.0)
    loss.backward()
    mean = (ranks[0][0] + ranks[1][0]) / 2
    torch.testing.assert_close(mean, loss.detach(), rtol=1e-10, atol=1e-12)
    for level, p in enumerate(whole):
        # DDP averages over 2 ranks: each rank's gradient / 2 is the whole batch's gradient.
        got = torch.cat([ranks[0][1][level], ranks[1][1][level]]) / 2
        torch.testing.assert_close(got, p.grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- windows and cells


def test_cut_windows_reads_each_cell_in_row_major_order():
    features = torch.randn(2, 3, 12, 12)
    windows = cut_windows(features, 3)
    assert windows.shape == (18, 3, 4, 4)
    for m in range(2):
        for r in range(3):
            for c in range(3):
                expected = features[m, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
                assert torch.equal(windows[m * 9 + r * 3 + c], expected)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_windows_of_p5_minus_level_line_up_with_the_montage_cells(level):
    """A stand-in for the pyramid that only averages over its stride: level i's map of a montage
    has stride 32/2^i, so window k must average exactly cell k, i.e. the down-sampled image
    ``sources.flatten()[k]``."""
    size, batch = 64, 6
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(level))
    montages, sources = mcl_level(images, level, torch.Generator().manual_seed(7))
    grid, stride = 2**level, 32 // 2**level
    level_map = F.avg_pool2d(montages, stride)  # (M, 3, 2·grid, 2·grid): "P(5 - level)"
    window_means = cut_windows(level_map, grid).mean(dim=(2, 3))  # (M·grid², 3)
    small = images[:, :, :: 2**level, :: 2**level]  # the reference's nearest down-sampling
    expected = small[sources.flatten()].mean(dim=(2, 3))
    torch.testing.assert_close(window_means, expected)
    assert set(sources.flatten().tolist()) == set(range(batch))  # every image at every level


def test_window_head_with_identity_convs_is_window_average_pooling():
    head = WindowHead(in_channels=5, conv_channels=5, hidden_dim=8, out_dim=4).eval()
    with torch.no_grad():
        for layer in head.tower.convs:
            layer.conv.weight.zero_()
            layer.conv.weight[:, :, 1, 1] = torch.eye(5)
            layer.norm.running_mean.zero_()
            layer.norm.running_var.fill_(1 - layer.norm.eps)  # so BN divides by exactly 1
            layer.norm.weight.fill_(1)
            layer.norm.bias.zero_()
    grid, window = 4, 7
    features = torch.rand(2, 5, grid * window, grid * window)  # non-negative: ReLU is identity
    pooled = head.pool(cut_windows(features, grid))  # (2·16, 5)
    expected = F.avg_pool2d(features, window).permute(0, 2, 3, 1).reshape(-1, 5)  # 7x7 per cell
    torch.testing.assert_close(pooled, expected)


# ---------------------------------------------------------------- the method


def test_one_step_on_cpu(tmp_path):
    method = tiny_mcl(tmp_path)
    batch = mcl_batch(method)
    assert len(batch.views) == 8 and batch.views[0].shape == (8, 3, 64, 64)
    seen = []
    method.student.head.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    out = method(batch, state_at(method, 0))
    # Level i reads P(5 - i) of its montages: every window is one 64/32 = 2-pixel cell of it.
    # Online cells per branch: 8, 2·4, 1·16, 1·64 (ceil(2·8/64) montages at level 3).
    assert [tuple(s) for s in seen] == [(n, 16, 2, 2) for n in (8, 8, 16, 64) * 2]
    assert torch.isfinite(out.loss)  # its value: recomputed from the parts in test_wiring.py
    assert set(out.logs) == {f"loss_level{i}" for i in range(4)}
    out.loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.predictors.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())


def test_target_only_moves_by_ema(tmp_path):
    method = tiny_mcl(tmp_path, steps=10)
    assert_target_moves_only_by_ema(method, mcl_batch(method), 0, 0.99, 10)


def test_cells_only_head_equals_the_reference_head_over_all_levels_in_eval_mode(tmp_path):
    cells = tiny_mcl(tmp_path, **{"method.head_inputs": "cells"})
    every = tiny_mcl(tmp_path, **{"method.head_inputs": "all"})
    every.load_state_dict(cells.state_dict())
    batch = mcl_batch(cells)
    cells.eval()
    every.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        a = cells(batch, 0)
        torch.manual_seed(3)  # the same montages
        b = every(batch, 0)
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-5)
    for key in a.logs:
        assert a.logs[key].item() == pytest.approx(b.logs[key].item(), abs=1e-5)


def test_recipe_follows_the_released_config(tmp_path):
    cfg = build_config(get_method("mcl"), overrides=[f"out={tmp_path}"])
    assert cfg.optim.name == "lars" and cfg.optim.base_lr == 1.0 and cfg.optim.weight_decay == 1e-5
    assert cfg.optim.warmup_epochs == 10 and cfg.optim.min_lr == 1e-4
    assert cfg.optim.clip_grad == 500.0 and cfg.optim.decay_norm_and_bias is False
    assert cfg.batch_size == 4096 and cfg.epochs == 100 and cfg.batch_norm == "sync"
    assert cfg.method.momentum == 0.99 and list(cfg.method.level_weights) == [
        0.5,
        0.25,
        0.125,
        0.125,
    ]
    method = tiny_mcl(tmp_path)
    specs = method.view_specs()
    assert len(specs) == 8 and all(s.scale == (0.2, 1.0) for s in specs)
    assert [s.photometric.blur_p for s in specs] == [1.0] * 4 + [0.1] * 4
    assert [s.photometric.solarize_p for s in specs] == [0.0] * 4 + [0.2] * 4
    assert len(method.predictors) == 4


def test_view_size_must_split_into_whole_windows(tmp_path):
    with pytest.raises(ConfigError, match="divisible by 32"):
        tiny_mcl(tmp_path, **{"data.image_size": 72})


# ---------------------------------------------------------------- CLI run and exports


@pytest.fixture(scope="module")
def mcl_run(module_tmp_path):
    out = module_tmp_path / "mcl_run"
    assert main(["pretrain", "--method", "mcl", *overrides(out, steps=2)]) == 0
    return out


def test_pretrain_mcl_on_builtin_scenes(mcl_run):
    state = load_checkpoint(mcl_run / "checkpoints" / "last.pt")
    assert any(k.startswith("student.head.tower.") for k in state["model"])
    assert (mcl_run / "summary.json").exists()


def test_pretrain_mcl_on_an_image_folder(tmp_path):
    data = write_scene_folder(tmp_path / "images", 4, 80, seed=5)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "mcl", "--data", str(data), *overrides(out, steps=1)]
    assert main(args) == 0
    assert (out / "checkpoints" / "last.pt").exists()


BN_D2 = ("norm.weight", "norm.bias", "norm.running_mean", "norm.running_var")
FPN_D2 = {f"fpn_{kind}{i}.{part}" for kind in ("lateral", "output") for i in range(2, 6)
          for part in ("weight", *BN_D2)}  # fmt: skip
CONVS_D2 = {f"box_head.conv{k}.{part}" for k in range(1, 5) for part in ("weight", *BN_D2)}


def test_detectron2_export_has_fpn_and_head_convs_but_no_fc(mcl_run, tmp_path, capsys):
    out = tmp_path / "d2.pkl"
    assert main(["export", str(mcl_run), "--format", "detectron2", "--out", str(out)]) == 0
    with open(out, "rb") as f:
        model = pickle.load(f)["model"]
    heads = {k for k in model if k.startswith(("fpn_", "box_head."))}
    assert heads == FPN_D2 | CONVS_D2
    state = load_checkpoint(mcl_run / "checkpoints" / "last.pt")["model"]
    trained = state["student.head.tower.convs.2.norm.running_var"].numpy()
    np.testing.assert_array_equal(model["box_head.conv3.norm.running_var"], trained)
    assert 'NAME: "FastRCNNConvFCHead"' in capsys.readouterr().out


def test_mmdet_export_has_neck_and_shared_convs(mcl_run, tmp_path):
    out = tmp_path / "mm.pth"
    assert main(["export", str(mcl_run), "--format", "mmdet", "--out", str(out)]) == 0
    state_dict = torch.load(out, weights_only=True)["state_dict"]
    head = {k for k in state_dict if k.startswith("roi_head.")}
    assert {k.split(".")[3] for k in head} == {"0", "1", "2", "3"}  # shared_convs.k only
    assert all(k.startswith("roi_head.bbox_head.shared_convs.") for k in head)


def test_torchvision_export_loads_into_v2_detectors_with_only_the_fc_left(tmp_path):
    """MCL at the paper's widths (ResNet-50, FPN 256, head convs 256): every backbone, FPN and
    head-conv key of torchvision's v2 detectors is filled; the fc stays at its init."""
    sizes = ["backbone=resnet50", "data.image_size=224", "method.hidden_dim=32"]
    cfg = build_config(get_method("mcl"), overrides=[f"out={tmp_path}", *sizes])
    torch.manual_seed(0)
    method = build_method(cfg)
    modules = method.exportable()
    result = write_torchvision_detection(modules, tmp_path / "detector.pt")
    assert "roi_heads.box_head.5.* (no fc pretrained)" in result.instructions
    weights = torch.load(result.path, weights_only=True)
    tower = modules["box_head"].convs
    for state in v2_detector_states(weights, also_missing=("roi_heads.box_head.5.",)):
        assert torch.equal(state["roi_heads.box_head.3.0.weight"], tower[3].conv.weight)
        assert torch.equal(state["backbone.fpn.layer_blocks.2.1.running_var"],
                           modules["fpn"].output_convs[2].norm.running_var)  # fmt: skip
