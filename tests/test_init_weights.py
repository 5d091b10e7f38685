"""Continued pretraining (``--init``): the backbone starts exactly from the given weights, in
the student and the teacher, batch-norm statistics included; wrong weights stop the run.

The references are the saved models themselves (torchvision's and timm's), not our loader.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from densessl.cli import main
from densessl.config import build_config
from densessl.engine.session import open_session
from densessl.methods import get_method
from densessl.models.vit import vit_timm_kwargs
from densessl.recipes import RECIPES_DIR
from densessl.registry import METHODS
from densessl.runs import open_run

from conftest import refused, tiny_overrides
from tiny_timm import TINY_TIMM, tiny_timm_name

RECIPES = RECIPES_DIR


def started(out, method: str = "densecl", **extra):
    """The method of a fresh tiny run at step 0, built by the engine."""
    cfg = build_config(get_method(method), overrides=tiny_overrides(out, **extra))
    session = open_session(cfg)
    session.close()
    return session.method


def with_moved_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Running statistics away from their init (0 and 1), so that keeping them shows."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.num_batches_tracked.fill_(7)
    return model


def test_init_from_a_torchvision_state_dict_is_that_network_in_student_and_teacher(tmp_path):
    torch.manual_seed(5)
    reference = with_moved_statistics(torchvision.models.resnet18())
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    method = started(tmp_path / "run", init=str(path))
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    for network in (method.student, method.teacher):
        got = network.backbone.state_dict()
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), key


def test_init_from_a_timm_safetensors_file_maps_timms_names(tmp_path):
    torch.manual_seed(6)
    kwargs = TINY_TIMM["convnext_tiny"]
    reference = timm.create_model("convnext_tiny", num_classes=4, **kwargs).eval()
    path = tmp_path / "convnext.safetensors"
    save_file(reference.state_dict(), str(path))
    method = started(tmp_path / "run", backbone=tiny_timm_name("convnext_tiny"), init=str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = reference.forward_intermediates(x, intermediates_only=True)
        for network in (method.student, method.teacher):
            torch.testing.assert_close(network.backbone.eval()(x)["c5"], stages[-1])


def test_a_wrong_architecture_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    line = refused(capsys, ["pretrain", "--method", "densecl", "--init", str(path),
                            *tiny_overrides(tmp_path / "run")], tmp_path)  # fmt: skip
    assert str(path) in line and "resnet18" in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained from scratch


def test_a_run_continued_from_an_export_trains_and_exports(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["pretrain", "--method", "mocov2", *tiny_overrides(first, steps=1)]) == 0
    export = tmp_path / "first.pth"
    assert main(["export", str(first), "--format", "torchvision", "--out", str(export)]) == 0
    exported = torch.load(export, weights_only=True)
    # At step 0 the continued run's backbone is the export; from the run folder too.
    for source in (export, first):
        method = started(tmp_path / f"check_{source.name}", method="densecl", init=str(source))
        for key, value in exported.items():
            assert torch.equal(method.teacher.backbone.state_dict()[key], value), key
    code = main(["pretrain", "--method", "densecl", "--init", str(export),
                 *tiny_overrides(second, steps=2)])  # fmt: skip
    assert code == 0
    continued, cfg = open_run(second)
    assert cfg.init == str(export)
    moved = continued.student.backbone.conv1.weight
    assert not torch.equal(moved, exported["conv1.weight"])  # it trained
    out = tmp_path / "second.pth"
    assert main(["export", str(second), "--format", "torchvision", "--out", str(out)]) == 0
    resnet = torchvision.models.resnet18()
    result = resnet.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_continue_recipe_that_is_gentler_than_its_paper(name):
    """Lower lr, a warm-up of a few epochs at most, fewer epochs than the paper recipe."""
    paper = build_config(get_method(name))
    recipe = build_config(get_method(name), RECIPES / f"{name}_continue.yaml")
    assert recipe.optim.base_lr < paper.optim.base_lr
    assert 0 < recipe.optim.warmup_epochs <= 2 and recipe.optim.warmup_epochs <= recipe.epochs / 10
    assert recipe.epochs < paper.epochs


def test_init_of_a_vit_resamples_its_position_table_as_timm_does(tmp_path):
    torch.manual_seed(7)
    source = VisionTransformer(**vit_timm_kwargs("vit_test_patch8", img_size=64))  # 8 x 8 grid
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    method = started(tmp_path / "run", backbone="vit_test_patch8", init=str(path),
                     **{"data.image_size": 48})  # fmt: skip
    backbone = method.teacher.backbone  # a 224-px table: 28 x 28
    expected = checkpoint_filter_fn(source.state_dict(), backbone)
    assert backbone.pos_embed.shape[1] == 1 + 28 * 28
    for key, value in expected.items():
        assert torch.equal(backbone.state_dict()[key], value), key
