"""FPN, RoIAlign per level and the 4conv1fc head: against torchvision's own modules and closed
forms; the detector export against torchvision's v2 detectors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.ops import FeaturePyramidNetwork

from densessl.export.torchvision_detection import write_torchvision_detection
from densessl.models.backbones import build_backbone
from densessl.models.box_head import ConvFCBoxHead, roi_align_assigned, roi_align_levels
from densessl.models.fpn import FPN

from conftest import v2_detector_states

IN_CHANNELS = [8, 16, 32, 64]


def randomise_bn_(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine and running statistics, so a name swap would show."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.copy_(torch.randn(t.shape, generator=generator))
            m.running_var.data.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def pyramid_inputs(batch: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        f"c{i + 2}": torch.randn(batch, c, size // 2 ** (i + 2), size // 2 ** (i + 2),
                                 generator=generator)
        for i, c in enumerate(IN_CHANNELS)
    }  # fmt: skip


# ---------------------------------------------------------------- FPN and head


def test_fpn_equals_torchvision_fpn_with_batch_norm():
    fpn = FPN(IN_CHANNELS, 16)
    randomise_bn_(fpn)
    reference = FeaturePyramidNetwork(IN_CHANNELS, 16, norm_layer=nn.BatchNorm2d)
    renamed = {}
    for i in range(4):  # torchvision: inner_blocks = lateral, layer_blocks = output; .0 conv .1 BN
        for ours, theirs in (("lateral_convs", "inner_blocks"), ("output_convs", "layer_blocks")):
            for part, index in (("conv", 0), ("norm", 1)):
                for key, value in getattr(fpn, ours)[i].__getattr__(part).state_dict().items():
                    renamed[f"{theirs}.{i}.{index}.{key}"] = value
    reference.load_state_dict(renamed, strict=True)
    features = pyramid_inputs()
    for mode in ("eval", "train"):
        fpn.train(mode == "train")
        reference.train(mode == "train")
        ours = fpn(features)
        theirs = list(reference(features).values())
        assert [p.shape[-1] for p in ours] == [16, 8, 4, 2]
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b)


def test_box_head_equals_torchvision_conv_fc_head():
    head = ConvFCBoxHead(in_channels=16, conv_channels=8, fc_dim=32, roi_size=7)
    randomise_bn_(head)
    reference = FastRCNNConvFCHead((16, 7, 7), [8, 8, 8, 8], [32], norm_layer=nn.BatchNorm2d)
    renamed = {f"5.{k}": v for k, v in head.fc.state_dict().items()}
    for k, conv in enumerate(head.convs):
        renamed |= {f"{k}.0.{n}": v for n, v in conv.conv.state_dict().items()}
        renamed |= {f"{k}.1.{n}": v for n, v in conv.norm.state_dict().items()}
    reference.load_state_dict(renamed, strict=True)
    head.eval()
    reference.eval()
    rois = torch.randn(5, 16, 7, 7)
    torch.testing.assert_close(head(rois), reference(rois))


# ---------------------------------------------------------------- RoIAlign on the assigned level


def random_boxes(count: int, view: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    h, w = view
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([w * 0.7, h * 0.7])
    extent = 2 + torch.rand(count, 2, generator=generator) * torch.tensor([w * 0.3, h * 0.3])
    return torch.cat([corner, corner + extent], dim=1)


@pytest.mark.parametrize("view", [(64, 64), (112, 112), (40, 56)])
def test_pooling_the_assigned_level_equals_pool_all_and_mask(view):
    """The reference pools every box from all four levels and keeps, through its correspondence
    mask, the assigned one; pooling only that level gives the same features."""
    generator = torch.Generator().manual_seed(2)
    sizes = [(-(-view[0] // s), -(-view[1] // s)) for s in (4, 8, 16, 32)]  # ceil, like ResNet
    levels = [torch.randn(3, 6, h, w, generator=generator) for h, w in sizes]
    boxes = random_boxes(12, view, seed=3)
    image_index = torch.arange(3).repeat_interleave(4)
    level_index = torch.randint(0, 4, (12,), generator=generator)
    every = roi_align_levels(levels, boxes, image_index, view)  # (L, R, C, 7, 7)
    masked = torch.stack([every[level_index[r], r] for r in range(12)])
    assigned = roi_align_assigned(levels, boxes, image_index, level_index, view)
    torch.testing.assert_close(assigned, masked, rtol=0, atol=0)


def test_box_is_scaled_by_map_size_over_view_size():
    """On a map whose value is its x coordinate (f(j) = j at cell j), aligned RoIAlign of a box
    returns, per bin, the bin centre in map cells minus 0.5; the box enters the map scaled by
    map width / view width (4/112 for a 112-px view's P5, not 1/32)."""
    view = (112, 112)
    ramp = torch.arange(4.0).expand(1, 1, 4, 4).contiguous()  # P5 of a 112-px view: 4x4
    box = torch.tensor([[28.0, 28.0, 84.0, 84.0]])  # view pixels -> map cells 1..3
    pooled = roi_align_assigned([ramp] * 4, box, torch.zeros(1, dtype=torch.long),
                                torch.tensor([3]), view)  # fmt: skip
    scale = 4 / 112
    centres = (28 + (torch.arange(7) + 0.5) * 56 / 7) * scale - 0.5
    torch.testing.assert_close(pooled[0, 0, 3], centres)


# ---------------------------------------------------------------- torchvision v2 detectors


def soco_r50_modules() -> dict[str, nn.Module]:
    """The exported parts of a SoCo ResNet-50 at the paper's sizes (no projector needed)."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet50")
    fpn = FPN([256, 512, 1024, 2048], 256)
    head = ConvFCBoxHead(256, 256, 1024, 7)
    return {"backbone": backbone, "fpn": fpn, "box_head": head}


def test_detector_export_loads_into_torchvision_v2_models(tmp_path):
    modules = soco_r50_modules()
    result = write_torchvision_detection(modules, tmp_path / "detector.pt")
    weights = torch.load(result.path, weights_only=True)
    pairs = {
        "backbone.body.layer4.2.bn3.running_var": modules["backbone"].layer4[2].bn3.running_var,
        "backbone.fpn.inner_blocks.3.0.weight": modules["fpn"].lateral_convs[3].conv.weight,
        "backbone.fpn.layer_blocks.0.1.bias": modules["fpn"].output_convs[0].norm.bias,
        "roi_heads.box_head.2.0.weight": modules["box_head"].convs[2].conv.weight,
        "roi_heads.box_head.3.1.weight": modules["box_head"].convs[3].norm.weight,
        "roi_heads.box_head.5.weight": modules["box_head"].fc.weight,
    }
    for state in v2_detector_states(weights):
        for key, value in pairs.items():
            assert torch.equal(state[key], value), key
