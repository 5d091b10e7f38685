"""ViT backbones, their timm export, the dense probes on them, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

from densessl.cli import main
from densessl.config import load_saved_config
from densessl.eval.features import extract_features
from densessl.eval.segmentation import SyntheticSegmentation
from densessl.eval.weights import load_backbone
from densessl.export.timm_vit import write_timm_vit
from densessl.methods import build_method
from densessl.models import build_backbone
from densessl.models.vit import VIT_SPECS, ViTBackbone
from densessl.runs import load_checkpoint

from conftest import tiny_vit_method, tiny_vit_overrides, write_scene_folder


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Weights unlike a fresh init, so a loader that silently skips a key is caught."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_grid_and_class_token_for_any_input_size():
    model = build_backbone("vit_test_patch8", img_size=32).eval()
    out = model(torch.randn(2, 3, 40, 24))  # not the table's size, not square
    assert out["patch"].shape == (2, 48, 5, 3) and out["cls"].shape == (2, 48)
    tokens = model.forward_features(torch.randn(2, 3, 40, 24))
    assert tokens.shape == (2, 1 + 15, 48)


def test_patch_map_is_the_token_sequence_row_major():
    model = build_backbone("vit_test_patch8", class_token=False, final_norm=False).eval()
    x = torch.randn(1, 3, 16, 24)
    tokens = model.forward_features(x)[0]  # (6, D) for a 2x3 grid
    grid = model(x)["patch"][0]  # (D, 2, 3)
    for r in range(2):
        for c in range(3):
            torch.testing.assert_close(grid[:, r, c], tokens[r * 3 + c])


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "vit_small_patch8"])
def test_registered_sizes_are_deit_widths(name):
    patch, dim, depth, heads = VIT_SPECS[name]
    model = build_backbone(name)
    assert isinstance(model, ViTBackbone)
    assert (model.patch_size, model.embed_dim, len(model.blocks)) == (patch, dim, depth)
    assert model.blocks[0].attn.num_heads == heads and model.level_strides == {"patch": patch}
    assert model.pos_embed.shape == (1, 1 + (224 // patch) ** 2, dim)


@pytest.mark.parametrize("method", ["dino", "selfpatch"])
def test_exported_teacher_loads_into_timm_with_same_features(tmp_path, method):
    backbone = perturbed(tiny_vit_method(method, tmp_path).teacher.backbone).eval()
    result = write_timm_vit(backbone, tmp_path / "vit.pt")
    kwargs = backbone.timm_kwargs
    assert kwargs["class_token"] == (method == "dino") == kwargs["final_norm"]
    assert f"VisionTransformer({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" in (
        result.instructions
    )
    timm_model = VisionTransformer(**kwargs).eval()
    missing, unexpected = timm_model.load_state_dict(
        torch.load(result.path, weights_only=True), strict=True
    )
    assert missing == [] and unexpected == []
    # The table's own 6x6 grid: at any other size timm resamples with its antialiased bicubic
    # (PIL-style kernel), densessl with DINO's plain bicubic, so the two differ there on purpose.
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ours = backbone(x)["patch"]
        tokens = timm_model.forward_features(x)[:, timm_model.num_prefix_tokens :]
    torch.testing.assert_close(tokens, ours.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_load_backbone_reads_a_timm_vit_export(tmp_path):
    source = perturbed(tiny_vit_method("selfpatch", tmp_path).teacher.backbone).eval()
    write_timm_vit(source, tmp_path / "vit.pt")
    loaded = load_backbone(tmp_path / "vit.pt")
    assert isinstance(loaded, ViTBackbone) and loaded.arch == "vit_test_patch8"
    assert loaded.timm_kwargs == source.timm_kwargs  # no class token, no norm, 48 px table
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["patch"], source(x)["patch"])


def test_dense_features_of_a_vit_use_the_patch_grid():
    backbone = build_backbone("vit_test_patch16", img_size=64)
    data = extract_features(backbone, SyntheticSegmentation(3, 64, seed=5), image_size=64)
    assert data.levels == ("patch",) and data.stride == 16
    assert data.features.shape == (3, 48, 4, 4) and data.labels.shape == (3, 64, 64)


# ---------------------------------------------------------------- command line, end to end


@pytest.fixture(scope="module")
def image_folder(module_tmp_path):
    folder = write_scene_folder(module_tmp_path / "images", 8, 72, seed=3)
    Image.new("RGB", (90, 60), "white").save(folder / "wide.jpg")  # not square
    return folder


@pytest.fixture(scope="module")
def seg_dir(module_tmp_path):
    out = module_tmp_path / "seg"
    assert main(["data", "synthetic", "--out", str(out), "--format", "seg",
                 "--num-images", "8", "--image-size", "64"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("method", ["dino", "selfpatch"])
@pytest.mark.parametrize("source", ["folder", "scenes"])
def test_pretrain_export_and_probe(tmp_path, method, source, image_folder, seg_dir):
    run = tmp_path / "run"
    data = ["--data", str(image_folder)] if source == "folder" else []
    overrides = tiny_vit_overrides(run, method, steps=2)
    assert main(["pretrain", "--method", method, *data, *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    # Weight decay: cosine 0.04 -> 0.4 over the 2 steps of the run.
    assert [r["weight_decay"] for r in records] == pytest.approx([0.04, 0.22])
    assert ("loss_patch" in records[0]) == (method == "selfpatch")

    # The last layer stays frozen for the first epoch (4 steps of 4 images here).
    cfg = load_saved_config(run / "config.yaml")
    torch.manual_seed(cfg.seed)  # what the engine does before building the method
    initial = build_method(cfg).state_dict()
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    last = "student.head.last_layer.weight"
    assert torch.equal(trained[last], initial[last])
    assert not torch.equal(
        trained["student.head.mlp.0.weight"], initial["student.head.mlp.0.weight"]
    )

    exported = tmp_path / "vit.pt"
    assert main(["export", str(run), "--format", "timm", "--out", str(exported)]) == 0
    # One probe reads the run directory, the other the exported timm file.
    for probe, weights in (("linear-seg", run), ("knn-seg", exported)):
        report = tmp_path / f"{probe}.json"
        args = ["eval", probe, "--weights", str(weights), "--data", str(seg_dir),
                "--image-size", "64", "--json", str(report)]  # fmt: skip
        assert main(args) == 0
        assert 0 <= json.loads(report.read_text())["miou"] <= 100


def test_torchvision_export_of_a_vit_points_to_timm(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "dino", *tiny_vit_overrides(run, steps=1)]) == 0
    assert main(["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "x")]) == 2
    assert "--format timm" in capsys.readouterr().err


def test_position_embeddings_are_resampled_bicubic_without_antialias():
    # DINO's interpolate_pos_encoding: bicubic nn.functional.interpolate, no antialias; the
    # class token's entry is not resampled. 8x8 table -> 5x6 grid (shrinking, where an
    # antialiased filter would differ).
    vit = ViTBackbone("vit_test_patch8", img_size=64).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()
        tokens = vit._pos_embed(torch.zeros(2, 5, 6, vit.embed_dim))  # zero patch embeddings
        grid = vit.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
        expected = torch.nn.functional.interpolate(
            grid.double(), size=(5, 6), mode="bicubic", align_corners=False
        )
        antialiased = torch.nn.functional.interpolate(
            grid, size=(5, 6), mode="bicubic", align_corners=False, antialias=True
        )
    expected = expected.flatten(2).transpose(1, 2).float()  # (1, 30, D)
    assert tokens.shape == (2, 31, vit.embed_dim)
    torch.testing.assert_close(tokens[:, 1:], expected.expand(2, -1, -1), rtol=1e-5, atol=1e-5)
    cls = vit.cls_token[0, 0] + vit.pos_embed[0, 0]
    torch.testing.assert_close(tokens[:, 0], cls.expand(2, -1))
    assert (antialiased.flatten(2).transpose(1, 2) - expected).abs().max() > 1e-2  # it matters


def test_class_token_starts_truncated_normal_with_std_002():
    # DINO's vision_transformer.py: trunc_normal_(cls_token, std=.02); timm: normal std 1e-6.
    torch.manual_seed(0)
    tokens = torch.cat([ViTBackbone("vit_test_patch16").cls_token.flatten() for _ in range(8)])
    assert 0.015 < tokens.std().item() < 0.025  # 384 draws
    assert tokens.abs().max().item() <= 2.0
