"""Segmentation probes: metrics by hand, probes that must be near-perfect on oracle features,
chunked k-NN, weight loading, and a smoke run on a real (random) ResNet-18."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from densessl.data.synthetic import SyntheticScenes
from densessl.errors import WeightsError
from densessl.eval.features import extract_features, preprocess, resized_shape
from densessl.eval.knn_seg import KnnSegOptions, knn_predict_scores, knn_seg
from densessl.eval.linear_seg import LinearSegOptions, linear_seg
from densessl.eval.metrics import SegmentationScores, confusion_matrix
from densessl.eval.weights import load_backbone

IGNORE = 255
PALETTE = np.array(
    [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [40, 220, 220]], dtype=np.uint8
)


class BlockScenes:
    """Images made of 32x32 blocks, each block one class painted in that class's colour.

    Some blocks are ignore (grey) and a few scattered pixels too. Half of the images are
    landscape, half portrait, so that grids of two sizes and the (H, W) order are exercised.
    """

    ignore_index = IGNORE

    def __init__(self, num_images: int, seed: int, num_classes: int = 5) -> None:
        self.num_classes = num_classes
        self.class_names = [f"class{c}" for c in range(num_classes)]
        self.num_images = num_images
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def describe(self, i: int) -> str:
        return f"block scene {i} (seed {self.seed})"

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        grid = (3, 4) if i % 2 == 0 else (4, 3)
        blocks = rng.integers(0, self.num_classes, size=grid)
        blocks[rng.random(grid) < 0.1] = IGNORE
        labels = np.kron(blocks, np.ones((32, 32), dtype=np.int64))
        image = np.full((*labels.shape, 3), 128, dtype=np.uint8)
        scored = labels != IGNORE
        image[scored] = PALETTE[labels[scored]]
        labels[rng.random(labels.shape) < 0.02] = IGNORE  # scattered ignore pixels
        return Image.fromarray(image, mode="RGB"), labels


class OracleBackbone(nn.Module):
    """A "backbone" whose C5 feature at each 32x32 cell encodes that cell's class, plus noise."""

    def __init__(self, dim: int = 64, noise: float = 0.1) -> None:
        super().__init__()
        palette = torch.tensor(PALETTE, dtype=torch.float32) / 255
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("palette", (palette - mean) / std)  # normalised, (K, 3)
        self.register_buffer("embedding", torch.randn(len(PALETTE), dim, generator=_gen(1)))
        self.noise = noise
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        colours = F.avg_pool2d(x, 32).permute(0, 2, 3, 1)  # (B, h, w, 3)
        nearest = torch.cdist(colours.reshape(-1, 3), self.palette).argmin(1)
        features = self.embedding[nearest].reshape(*colours.shape[:3], -1)
        features = features + self.noise * torch.randn(features.shape, generator=_gen(2))
        return {"c5": features.permute(0, 3, 1, 2)}


class SceneSet:
    """The built-in synthetic scenes behind the SegmentationDataset interface."""

    ignore_index = IGNORE

    def __init__(self, num_images: int, size: int, seed: int) -> None:
        self.scenes = SyntheticScenes(num_images, image_size=size, seed=seed)
        self.num_classes = SyntheticScenes.num_classes
        self.class_names = list(SyntheticScenes.class_names)

    def __len__(self) -> int:
        return len(self.scenes)

    def describe(self, i: int) -> str:
        return self.scenes.describe(i)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        scene = self.scenes.scene(i)
        return Image.fromarray(scene.image, mode="RGB"), scene.mask


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- metrics


def test_miou_matches_a_hand_computed_case():
    # 5 classes: class 3 is only predicted (IoU 0, counted), class 4 appears nowhere (NaN,
    # excluded); the ignore pixel is predicted 1 and must not count.
    pred = torch.tensor([[0, 1, 1], [2, 3, 0]])
    target = torch.tensor([[0, 1, IGNORE], [2, 1, 0]])
    confusion = confusion_matrix(pred, target, num_classes=5)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    expected[0, 0], expected[1, 1], expected[1, 3], expected[2, 2] = 2, 1, 1, 1
    assert torch.equal(confusion, expected)
    # Accumulable: the two rows scored separately add up to the whole.
    rows = sum(confusion_matrix(pred[r], target[r], 5) for r in range(2))
    assert torch.equal(rows, confusion)

    scores = SegmentationScores.from_confusion(confusion, ["a", "b", "c", "d", "e"])
    # IoU = TP / (TP + FP + FN): a 2/2, b 1/(1+0+1), c 1/1, d 0/(0+1+0), e undefined.
    assert scores.per_class_iou["a"] == pytest.approx(100.0)
    assert scores.per_class_iou["b"] == pytest.approx(50.0)
    assert scores.per_class_iou["c"] == pytest.approx(100.0)
    assert scores.per_class_iou["d"] == pytest.approx(0.0)
    assert math.isnan(scores.per_class_iou["e"])
    assert scores.miou == pytest.approx((100 + 50 + 100 + 0) / 4)
    assert scores.pixel_accuracy == pytest.approx(100 * 4 / 5)

    as_json = json.loads(json.dumps(scores.to_dict(), allow_nan=False))
    assert as_json["per_class_iou"]["e"] is None and as_json["miou"] == pytest.approx(62.5)
    table = scores.format_table("hand case")
    assert table.splitlines()[0] == "hand case" and "62.50" in table and "absent" in table


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=3)


# ---------------------------------------------------------------- features


def test_resize_keeps_aspect_and_multiples_of_32():
    assert resized_shape(375, 500, 224) == (224, 288)
    assert resized_shape(500, 375, 224) == (288, 224)
    assert resized_shape(64, 64, 64) == (64, 64)
    image = Image.fromarray(np.zeros((100, 60, 3), dtype=np.uint8))
    labels = np.zeros((100, 60), dtype=np.int64)
    labels[50:] = 3  # bottom half
    pixels, resized = preprocess(image, labels, 64)
    assert pixels.shape == (3, 96, 64) and pixels.dtype == torch.uint8
    assert resized.shape == (96, 64) and set(resized[:48].unique().tolist()) == {0}
    assert set(resized[48:].unique().tolist()) == {3}


def test_features_are_cached_on_disk(tmp_path):
    data, backbone = BlockScenes(4, seed=0), OracleBackbone()
    path = tmp_path / "features.pt"
    first = extract_features(backbone, data, image_size=96, batch_size=3, cache_path=path)
    calls = backbone.calls
    second = extract_features(backbone, data, image_size=96, batch_size=3, cache_path=path)
    assert backbone.calls == calls  # loaded, not recomputed
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert first.features.dtype == torch.float16 and first.labels.dtype == torch.uint8
    # Landscape (3x4 grid) and portrait (4x3) images padded into one (4, 4) grid.
    assert first.features.shape == (4, 64, 4, 4)
    assert first.grid_sizes.tolist()[:2] == [[3, 4], [4, 3]]
    features, labels = first.item(1)
    assert features.shape == (64, 4, 3) and labels.shape == (128, 96)
    # Different images, different key: recomputed.
    extract_features(backbone, BlockScenes(4, seed=1), image_size=96, cache_path=path)
    assert backbone.calls > calls


def test_features_are_recomputed_when_one_weight_changes(tmp_path):
    data, backbone = BlockScenes(2, seed=0), OracleBackbone()
    path = tmp_path / "features.pt"
    extract_features(backbone, data, image_size=96, cache_path=path)
    calls = backbone.calls
    extract_features(backbone, data, image_size=96, cache_path=path)
    assert backbone.calls == calls
    entry = backbone.embedding[0, 0]
    backbone.embedding[0, 0] = torch.nextafter(entry, entry + 1)  # one ulp
    extract_features(backbone, data, image_size=96, cache_path=path)
    assert backbone.calls > calls


# ---------------------------------------------------------------- probes on oracle features


def test_linear_probe_is_near_perfect_on_oracle_features():
    scores = linear_seg(
        OracleBackbone(),
        BlockScenes(32, seed=0),
        BlockScenes(8, seed=1),
        LinearSegOptions(image_size=96, batch_size=8),
    )  # 60 steps at the default lr
    assert scores.miou > 90 and scores.pixel_accuracy > 90, scores.format_table("linear")


def test_knn_is_near_perfect_on_oracle_features():
    scores = knn_seg(
        OracleBackbone(),
        BlockScenes(12, seed=0),
        BlockScenes(8, seed=1),
        KnnSegOptions(image_size=96, k=5),
    )
    assert scores.miou > 90 and scores.pixel_accuracy > 90, scores.format_table("knn")


def test_knn_chunked_equals_unchunked():
    backbone = OracleBackbone(noise=1.0)  # noisy enough that neighbours are not trivial
    train = extract_features(backbone, BlockScenes(10, seed=0), image_size=96)
    val = extract_features(backbone, BlockScenes(6, seed=1), image_size=96)
    whole = knn_predict_scores(train, val, KnnSegOptions(k=7, chunk_size=None))
    chunked = knn_predict_scores(train, val, KnnSegOptions(k=7, chunk_size=5))
    assert torch.equal(whole.confusion, chunked.confusion)
    assert 0 < whole.miou < 100  # the comparison is not between two perfect results
    subsampled = knn_predict_scores(train, val, KnnSegOptions(k=7, memory_per_image=3))
    assert int(subsampled.confusion.sum()) == int(whole.confusion.sum())


# ---------------------------------------------------------------- weights


def test_random_weights_are_seeded_and_named():
    a, b = load_backbone("random", "resnet18"), load_backbone("random", "resnet18")
    assert a.arch == "resnet18" and not a.training
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_exported_torchvision_weights_infer_the_arch(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = load_backbone(tmp_path / "r18.pth")
    assert model.arch == "resnet18"
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key

    wrapped = {"state_dict": {f"module.backbone.{k}": v for k, v in reference.state_dict().items()}}
    wrapped["state_dict"]["module.decode_head.weight"] = torch.zeros(3)  # not backbone: dropped
    torch.save(wrapped, tmp_path / "wrapped.pt")
    model = load_backbone(tmp_path / "wrapped.pt")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)

    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(reference.state_dict(), str(tmp_path / "r18.safetensors"))
    assert load_backbone(tmp_path / "r18.safetensors").arch == "resnet18"


def test_bad_weights_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    cases = [
        (tmp_path / "junk.pt", None),
        (tmp_path / "missing.pt", None),
        (tmp_path / "notes.txt", None),
        (tmp_path / "r18.pt", "resnet34"),
    ]
    (tmp_path / "notes.txt").write_text("hello")
    for path, arch in cases:
        with pytest.raises(WeightsError) as err:
            load_backbone(path, arch)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_run_directory_gives_its_backbone(tmp_path):
    from densessl.cli import main

    args = ["pretrain", "--method", "densecl", "--out", str(tmp_path), "backbone=resnet18",
            "batch_size=4", "steps=1", "data.image_size=64", "data.synthetic_images=8",
            "data.synthetic_size=64", "data.workers=0", "method.queue_size=8", "method.dim=8",
            "method.hidden_dim=16"]  # fmt: skip
    assert main(args) == 0
    from densessl.runs import load_checkpoint

    trained = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    for network, prefix in ((None, "student"), ("teacher", "teacher")):
        model = load_backbone(tmp_path, network=network)
        assert model.arch == "resnet18" and not model.training
        assert torch.equal(model.conv1.weight, trained[f"{prefix}.backbone.conv1.weight"])
    model = load_backbone(tmp_path / "checkpoints" / "last.pt")
    assert torch.equal(model.conv1.weight, trained["student.backbone.conv1.weight"])


# ---------------------------------------------------------------- real backbone smoke


def test_real_backbone_smoke():
    backbone = load_backbone("random", "resnet18")
    train, val = SceneSet(8, 64, seed=0), SceneSet(4, 64, seed=1)
    for scores in (
        linear_seg(
            backbone, train, val, LinearSegOptions(levels=["c4", "c5"], image_size=64, epochs=2)
        ),
        knn_seg(backbone, train, val, KnnSegOptions(image_size=64, memory_per_image=2)),
    ):
        assert 0 <= scores.miou <= 100 and 0 <= scores.pixel_accuracy <= 100
