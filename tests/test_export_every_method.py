"""Every registered method, exported through ``densessl export`` in every format it supports,
loaded into that format's target and compared value by value with the network its authors
released; every other format refuses with exit code 2 and one line.

One tiny ``densessl pretrain`` per method (its golden-record run, 1 step) serves all formats.
After a step the student and the teacher differ, so an export of the wrong network shows. The
targets: torchvision's ResNet and v2 Faster R-CNN, timm's ResNet and ``VisionTransformer`` (all
installed, loaded for real); detectron2 and mmdet (not installed), whose key sets are written out
in ``reference/export_layouts.py`` from those libraries' layouts. Names go back to densessl's
through the mappings written there, never through the renaming code under test.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from densessl.cli import main
from densessl.export import FORMATS
from densessl.registry import METHODS
from densessl.runs import open_run

from conftest import refused
from reference.export_layouts import (
    DENSESSL_NAME,
    detectron2_head_keys,
    detectron2_resnet_keys,
    mmdet_head_keys,
    tiny_v2_detector,
    torchvision_trunk_keys,
)

sys.path.insert(0, str(Path(__file__).with_name("golden")))
from record import RUNS  # the tiny run of every method

NAMES = METHODS.names()
TRUNK = ("torchvision", "timm", "safetensors", "detectron2", "mmdet", "smp")
ALL_FORMATS = ("torchvision", "timm", "safetensors", "detectron2", "mmdet", "smp",
               "torchvision_detection")  # fmt: skip


def pretrains_detection_heads(name: str) -> bool:
    """The method's export roles include an FPN and a box head (``Method.export_roles``)."""
    return {"fpn", "box_head"} <= set(getattr(METHODS.get(name), "export_roles", {}))


def supported(name: str) -> tuple[str, ...]:
    """What a tiny run of ``name`` exports: a ViT, timm only; a ResNet, every trunk format, and
    a detector's layout too when it pretrains the FPN and box head."""
    if RUNS[name]["backbone"].startswith("vit"):
        return ("timm",)
    return (*TRUNK, "torchvision_detection") if pretrains_detection_heads(name) else TRUNK


def box_head_has_fc(method) -> bool:
    """Whether the pretrained box head ends in a fully connected layer (MCL's tower has convs
    only, so the detector keeps its own fc)."""
    head = method.student.get_submodule(method.export_roles["box_head"])
    return any(isinstance(m, torch.nn.Linear) for m in head.modules())


# Formats that carry the FPN and box head along with the backbone, when a method pretrained them.
WITH_HEADS = ("detectron2", "mmdet", "torchvision_detection")
SUFFIX = {"detectron2": "pkl", "safetensors": "safetensors"}


class Runs:
    """Each method's tiny pretraining run, made on first use and kept for the module, with the
    method read back from its checkpoint."""

    def __init__(self, root: Path) -> None:
        self.root, self.methods = root, {}

    def __getitem__(self, name: str) -> Path:
        out = self.root / name
        if name not in self.methods:
            values = {**RUNS[name], "steps": 1, "data.workers": 0, "out": str(out)}
            args = ["pretrain", "--method", name, *(f"{k}={v}" for k, v in values.items())]
            assert main(args) == 0
            self.methods[name] = open_run(out)[0]
        return out

    def method(self, name: str):
        self[name]  # pretrains on first use
        return self.methods[name]


@pytest.fixture(scope="module")
def runs(module_tmp_path) -> Runs:
    return Runs(module_tmp_path)


def network_weights(method, name: str, network: str, heads: bool = True) -> dict[str, torch.Tensor]:
    """The transferable parts of the method's ``"online"`` or ``"teacher"`` network under
    densessl names (``backbone.*``, and ``fpn.*``, ``box_head.*`` if ``heads``)."""
    encoder = method.teacher if network == "teacher" else method.student
    parts = {"backbone": "backbone"}
    if heads and pretrains_detection_heads(name):
        parts |= {"fpn": "fpn", "box_head": method.export_roles["box_head"]}
    return {
        f"{part}.{key}": value
        for part, path in parts.items()
        for key, value in encoder.get_submodule(path).state_dict().items()
    }


# ---------------------------------------------------------------- loading into each target


def load_into(build, weights: dict, unfilled: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Load ``weights`` into the model ``build()`` makes, built on the meta device (nothing
    initialised: the load assigns the file's tensors). Exactly the keys under the ``unfilled``
    prefixes may stay missing, nothing may be unexpected, every shape must match. Returns the
    loaded tensors under the target's names."""
    with torch.device("meta"):
        model = build()
    outcome = model.load_state_dict(weights, strict=False, assign=True)
    # BN fills an absent num_batches_tracked itself, so torch never reports it missing.
    assert set(outcome.missing_keys) == {
        k for k in model.state_dict()
        if k.startswith(unfilled) and not k.endswith("num_batches_tracked")
    }  # fmt: skip
    assert outcome.unexpected_keys == []
    state = model.state_dict()
    return {k: state[k] for k in weights}


def into_torchvision(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """``torchvision.models.resnet18()``: exactly the classifier stays unfilled."""
    return load_into(torchvision.models.resnet18, torch.load(path, weights_only=True), ("fc.",))


def into_torchvision_from_safetensors(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    return load_into(torchvision.models.resnet18, load_file(path), ("fc.",))


def into_timm(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """timm's ``resnet18`` without classifier, or its ``VisionTransformer`` with the printed
    arguments: every key filled."""
    if RUNS[name]["backbone"].startswith("vit"):
        kwargs = method.teacher.backbone.timm_kwargs
        return load_into(lambda: VisionTransformer(**kwargs), torch.load(path, weights_only=True))
    build = lambda: timm.create_model(RUNS[name]["backbone"], num_classes=0)  # noqa: E731
    return load_into(build, torch.load(path, weights_only=True))


def into_smp(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """segmentation_models_pytorch's ``resnet18`` encoder of a Unet: every key filled (its
    ``load_state_dict`` returns nothing, so the strict load itself is the check)."""
    import segmentation_models_pytorch as smp

    encoder = smp.Unet("resnet18", encoder_weights=None, classes=2).encoder
    weights = torch.load(path, weights_only=True)
    encoder.load_state_dict(weights, strict=True)
    state = encoder.state_dict()
    return {k: state[k] for k in weights}


def into_detectron2(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """detectron2's ResNet (+ FPN and 4conv1fc head when pretrained), key for key."""
    with open(path, "rb") as f:
        document = pickle.load(f)
    assert document["__author__"] == "densessl" and document["matching_heuristics"] is True
    expected = detectron2_resnet_keys("resnet18")
    if pretrains_detection_heads(name):
        expected |= detectron2_head_keys(fc=box_head_has_fc(method))
    assert set(document["model"]) == expected
    return {k: torch.from_numpy(v) for k, v in document["model"].items()}


def into_mmdet(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """mmdet's ``ResNet(style="pytorch")`` under ``backbone.`` (+ neck and bbox head)."""
    state_dict = torch.load(path, weights_only=True)["state_dict"]
    expected = {f"backbone.{k}" for k in torchvision_trunk_keys("resnet18")}
    if pretrains_detection_heads(name):
        expected |= mmdet_head_keys(fc=box_head_has_fc(method))
    assert set(state_dict) == expected
    return state_dict


def into_v2_detector(path: Path, name: str, method) -> dict[str, torch.Tensor]:
    """torchvision's v2 Faster R-CNN at the run's widths: only the RPN head and the box
    predictor stay unfilled (and the box head's fc, which MCL does not pretrain)."""
    run, has_fc = RUNS[name], box_head_has_fc(method)
    fc_dim = run.get("method.head_fc_dim", 1024)  # MCL: the detector keeps its own fc
    widths = (run["method.fpn_channels"], run["method.head_channels"], fc_dim)
    unfilled = ("rpn.head.", "roi_heads.box_predictor.")
    unfilled += () if has_fc else ("roi_heads.box_head.5.",)  # 4 convs, Flatten, then the fc
    return load_into(
        lambda: tiny_v2_detector(*widths), torch.load(path, weights_only=True), unfilled
    )


LOAD = {
    "torchvision": into_torchvision,
    "safetensors": into_torchvision_from_safetensors,
    "timm": into_timm,
    "detectron2": into_detectron2,
    "mmdet": into_mmdet,
    "smp": into_smp,
    "torchvision_detection": into_v2_detector,
}


# ---------------------------------------------------------------- the tests


def test_every_format_is_listed_here():
    """A new format fails here until its loading into its target is written out above."""
    assert set(FORMATS) == set(ALL_FORMATS) == set(LOAD)


@pytest.mark.parametrize("name", NAMES)
def test_after_one_step_the_student_and_the_teacher_differ_in_every_part(runs, name):
    """Without this the value checks below could not tell the student from the teacher."""
    online = network_weights(runs.method(name), name, "online")
    teacher = network_weights(runs.method(name), name, "teacher")
    for part in ("backbone.", "fpn.", "box_head."):
        keys = [k for k in online if k.startswith(part) and online[k].is_floating_point()]
        assert not keys or any(not torch.equal(online[k], teacher[k]) for k in keys), part


SUPPORTED_PAIRS = [(name, fmt) for name in NAMES for fmt in supported(name)]
REFUSED_PAIRS = [(n, f) for n in NAMES for f in ALL_FORMATS if f not in supported(n)]


@pytest.mark.parametrize("name,fmt", SUPPORTED_PAIRS)
def test_export_loads_into_its_target_with_the_released_networks_values(runs, tmp_path, name, fmt):
    """Every tensor the target holds equals the released network's tensor of the same role, and
    every tensor of the released parts lands in the target (detectron2 drops only
    ``num_batches_tracked``, which its norms lack)."""
    run = runs[name]
    out = tmp_path / f"export.{SUFFIX.get(fmt, 'pt')}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    method = runs.method(name)
    loaded = LOAD[fmt](out, name, method)
    released = network_weights(method, name, method.export_network, fmt in WITH_HEADS)
    back = {DENSESSL_NAME[fmt](key): key for key in loaded}
    assert len(back) == len(loaded)  # no two target keys from one tensor
    dropped = {k for k in released if fmt == "detectron2" and k.endswith("num_batches_tracked")}
    assert set(back) == set(released) - dropped
    differ = [
        theirs for ours, theirs in back.items() if not torch.equal(loaded[theirs], released[ours])
    ]
    assert differ == []  # target keys whose values are not the released network's


@pytest.mark.parametrize("name,fmt", REFUSED_PAIRS)
def test_an_unsupported_format_is_refused_in_one_line(runs, tmp_path, capsys, name, fmt):
    """A ViT to a ResNet layout, or a backbone-only run to a detector: exit code 2, one line on
    stderr, nothing on stdout and no file written."""
    run = runs[name]
    capsys.readouterr()  # drop the pretraining's output
    out = tmp_path / "refused.pt"
    refused(capsys, ["export", str(run), "--format", fmt, "--out", str(out)], tmp_path)
    assert not out.exists()
