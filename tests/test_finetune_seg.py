"""Fine-tuning for segmentation and the comparison of inits (``densessl eval finetune-seg``).

The labelled subset is the same for every init and a function of the seed; the decoder's
encoder holds exactly the tensors ``export --format smp`` writes; fine-tuning a tiny network on a
task only its trained encoder can solve beats chance by far (a broken loss or a frozen encoder
fails it); the comparison's margins are the hand-computed paired differences.
"""

from __future__ import annotations

import copy
import json
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from densessl.cli import main
from densessl.errors import ConfigError
from densessl.eval.compare import Comparison
from densessl.eval.finetune_seg import FinetuneSegOptions, finetune_seg
from densessl.eval.labels import label_count, label_subset
from densessl.eval.weights import load_backbone

from conftest import refused, tiny_overrides
from tiny_timm import tiny_timm_name

TINY = FinetuneSegOptions(iterations=2, batch_size=2, crop_size=64, workers=0, warmup_iterations=0)


class StripeSet:
    """A labelled set only a trained encoder solves: grey noise with a vertical band of finer
    noise whose texture (not colour, not brightness) marks class 1; the rest is class 0."""

    num_classes, class_names, ignore_index = 2, ["plain", "textured"], 255

    def __init__(self, count: int, seed: int, size: int = 64) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(count):
            coarse = rng.normal(128, 30, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
            fine = rng.normal(128, 30, (size, size))
            left = int(rng.integers(0, size // 2))
            band = slice(left, left + size // 2)
            grey = coarse.copy()
            grey[:, band] = fine[:, band]
            image = np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8)
            labels = np.zeros((size, size), np.int64)
            labels[:, band] = 1
            self.items.append((image, labels))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        image, labels = self.items[i]
        return Image.fromarray(image), labels

    def describe(self, i: int) -> str:
        return f"stripes {i}"


@pytest.fixture(scope="module")
def scenes(module_tmp_path):
    """A small segmentation folder of built-in scenes: 12 train and 3 val images of 64 px."""
    from densessl.eval.segmentation import write_synthetic_segmentation

    return write_synthetic_segmentation(module_tmp_path / "seg", 12, 64)


def two_colour_camvid(root):
    """CamVid layout, 4 train and 2 val images holding only sky (left) and road (right)."""
    from PIL import Image

    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16, 0] = 200
    image[:, 16:, 2] = 200
    label = np.zeros((32, 32), np.uint8)
    label[:, 16:] = 3
    for split, n in {"train": 4, "val": 2}.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(image).save(root / split / f"{i}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i}.png")
    return root


# --- the labelled subset ----------------------------------------------------------------------


def test_the_subset_is_drawn_by_the_seed_and_a_larger_one_contains_it():
    assert label_subset(300, "10%", 0) == label_subset(300, "10%", 0)
    assert label_subset(300, "10%", 0) != label_subset(300, "10%", 1)
    assert len(label_subset(300, "10%", 0)) == 30 and len(label_subset(300, "37", 2)) == 37
    assert set(label_subset(300, "10%", 3)) <= set(label_subset(300, "50%", 3))
    assert label_count("0.1%", 300) == 1  # at least one image
    assert label_subset(8, "100%", 5) == list(range(8))


def test_every_init_learns_from_the_same_images_at_a_seed(monkeypatch, scenes):
    import densessl.api as ds
    import densessl.eval.finetune_seg as module

    seen: dict[tuple[int, int], list[list[int]]] = {}
    real = module.finetune_seg

    def recording(backbone, train, val, options, indices, state_file=None):
        seen.setdefault((options.seed, len(indices)), []).append(list(indices))
        return real(backbone, train, val, options, indices, state_file)

    monkeypatch.setattr(module, "finetune_seg", recording)
    ds.finetune_seg("random", scenes, backbone="resnet18", compare=["random"],
                    labels=["5"], seeds=2, iterations=1, batch_size=2, crop_size=32,
                    workers=0)  # fmt: skip
    assert sorted(seen) == [(0, 5), (1, 5)]
    for (seed, count), subsets in seen.items():
        assert len(subsets) == 2 and subsets[0] == subsets[1] == label_subset(12, count, seed)


# --- the network --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(module_tmp_path):
    out = module_tmp_path / "run"
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(out, steps=1)]) == 0
    return out


@pytest.mark.parametrize("decoder", ["fpn", "unet"])
def test_the_encoder_holds_exactly_the_smp_export(tiny_run, tmp_path, decoder):
    from densessl.eval.segmenter import build_segmenter

    exported = tmp_path / "encoder.pt"
    assert main(["export", str(tiny_run), "--format", "smp", "--out", str(exported)]) == 0
    written = torch.load(exported, weights_only=True)
    model = build_segmenter(load_backbone(tiny_run), decoder, num_classes=3, seed=0)
    encoder = model.encoder.state_dict()
    assert set(encoder) == set(written)
    assert all(torch.equal(encoder[k], written[k]) for k in written)


def test_a_timm_encoder_holds_exactly_the_smp_export(tmp_path):
    from densessl.eval.segmenter import build_segmenter

    run = tmp_path / "run"
    name = tiny_timm_name("convnext_tiny")
    assert main(["pretrain", "--method", "densecl", *tiny_overrides(run, 1, backbone=name)]) == 0
    exported = tmp_path / "encoder.pt"
    assert main(["export", str(run), "--format", "smp", "--out", str(exported)]) == 0
    written = torch.load(exported, weights_only=True)
    encoder = build_segmenter(load_backbone(run), "fpn", 3, seed=0).encoder.state_dict()
    assert set(encoder) == set(written)
    assert all(torch.equal(encoder[k], written[k]) for k in written)


def test_the_decoder_init_depends_on_the_seed_only():
    from densessl.eval.segmenter import build_segmenter

    a = build_segmenter(load_backbone("random", "resnet18"), "fpn", 3, seed=4)
    torch.manual_seed(123)  # the caller's RNG does not matter
    b = build_segmenter(load_backbone("random", "resnet18"), "fpn", 3, seed=4)
    c = build_segmenter(load_backbone("random", "resnet18"), "fpn", 3, seed=5)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if k.startswith("decoder"))


@pytest.mark.slow
def test_fine_tuning_learns_a_task_only_a_trained_network_solves():
    """Texture, not colour, marks the class: mIoU far above chance (about 33 for two classes
    guessed at random) and a low final loss (a broken loss fails both), and the encoder's
    weights moved from the backbone's (a frozen encoder fails that)."""
    backbone = load_backbone("random", "resnet18")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    options = FinetuneSegOptions(
        iterations=40, batch_size=4, crop_size=64, workers=0, lr=2e-3, warmup_iterations=5,
        scale_min=1.0, scale_max=1.0,
    )  # fmt: skip
    result = finetune_seg(backbone, StripeSet(16, seed=0), StripeSet(6, seed=1), options)
    trained = result.model.encoder.state_dict()
    moved = [
        k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, trained[k])
    ]
    assert "layer1.0.conv1.weight" in moved and "conv1.weight" in moved
    assert result.scores.miou > 75, result.scores.miou
    assert result.final_loss < 0.3


def test_the_recipe_length_follows_the_labelled_images():
    options = FinetuneSegOptions(epochs=40, batch_size=8, min_iterations=100)
    assert options.length(37) == 185 and options.length(10) == 100
    assert FinetuneSegOptions(iterations=7).length(1000) == 7


# --- interrupted and continued -----------------------------------------------------------------

RESUMED = FinetuneSegOptions(iterations=6, batch_size=2, crop_size=32, workers=0,
                             warmup_iterations=2)  # fmt: skip


class InterruptedAt:
    """A labelled set that sends this process SIGINT (Ctrl-C) while the ``at``-th image is read."""

    def __init__(self, dataset, at: int) -> None:
        self.dataset, self.at, self.reads = dataset, at, 0
        self.num_classes, self.class_names = dataset.num_classes, dataset.class_names
        self.ignore_index = dataset.ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            signal.raise_signal(signal.SIGINT)
        return self.dataset[i]

    def describe(self, i: int) -> str:
        return self.dataset.describe(i)


def test_an_interrupted_fine_tune_continues_to_the_same_weights(tmp_path, caplog):
    """Ctrl-C during step 3 ends the run after that step with its state saved; run again, it
    ends on the weights, loss and scores of a run never stopped: the optimizer's moments, the
    schedule's position, the crops' order and the decoder's dropout draws all carry over."""
    train, val = StripeSet(6, seed=0, size=32), StripeSet(2, seed=1, size=32)
    backbone = load_backbone("random", tiny_timm_name("resnet50d"))
    whole = finetune_seg(copy.deepcopy(backbone), train, val, RESUMED)
    state = tmp_path / "state.pt"
    caplog.set_level("WARNING", logger="densessl")
    with pytest.raises(KeyboardInterrupt):  # read 7 of 12 is step 3's second crop
        finetune_seg(copy.deepcopy(backbone), InterruptedAt(train, 7), val, RESUMED,
                     state_file=state)  # fmt: skip
    assert torch.load(state, weights_only=True)["step"] == 4
    assert f"interrupted at step 4 of 6; state saved to {state}" in caplog.text
    resumed = finetune_seg(copy.deepcopy(backbone), train, val, RESUMED, state_file=state)
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.final_loss == whole.final_loss and resumed.scores.miou == whole.scores.miou
    final = torch.load(state, weights_only=True)  # finished: the weights, no optimizer
    assert final["step"] == 6 and final["optimizer"] is None


def test_a_state_another_fine_tune_saved_is_refused(tmp_path):
    train, val = StripeSet(4, seed=0, size=32), StripeSet(2, seed=1, size=32)
    state = tmp_path / "state.pt"
    finetune_seg(load_backbone("random", "resnet18"), train, val, TINY, state_file=state)
    before = state.read_bytes()
    with pytest.raises(ConfigError, match=f"{state}: saved by a different fine-tune"):
        finetune_seg(load_backbone("random", "resnet18"), train, val,
                     replace(TINY, lr=2e-3), state_file=state)  # fmt: skip
    assert state.read_bytes() == before


def test_the_command_run_again_only_scores_the_finished_fine_tunes(scenes, tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    import densessl.eval.finetune_seg as module

    argv = ["eval", "finetune-seg", "--weights", "random", "--backbone", "resnet18", "--data",
            str(scenes), "--compare", "random", "--labels", "25%", "--iterations", "1",
            "--batch-size", "2", "--crop-size", "32", "--workers", "0", "--work-dir",
            str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "random'-labels25pct-seed0.pt", "random-labels25pct-seed0.pt"]  # fmt: skip

    def no_step(*args):
        raise AssertionError("a finished fine-tune trained again")

    monkeypatch.setattr(module, "learning_rate", no_step)
    assert main(argv) == 0
    assert capsys.readouterr().out == first


# --- the comparison ---------------------------------------------------------------------------


def test_margins_are_the_hand_computed_paired_differences():
    comparison = Comparison("finetune-seg (fpn)", ["mine", "random", "imagenet"],
                            {"mine": "runs/mine", "random": "random", "imagenet": "in1k.pth"},
                            ["10%"], train_images=367)  # fmt: skip
    comparison.scores = {
        "mine": {"10%": {0: 40.0, 1: 42.0, 2: 44.0}},
        "random": {"10%": {0: 30.0, 1: 35.0, 2: 31.0}},  # gaps 10, 7, 13: mean 10, sd 3
        "imagenet": {"10%": {0: 41.0, 1: 40.0, 2: 45.0}},  # gaps -1, 2, -1: mean 0, sd sqrt 3
    }
    random = comparison.margin("random", "10%")
    assert random.per_seed == (10.0, 7.0, 13.0)
    assert random.mean == pytest.approx(10.0) and random.sd == pytest.approx(3.0)
    assert random.beyond_twice_spread is True  # 10 > 2 * 3
    imagenet = comparison.margin("imagenet", "10%")
    assert imagenet.mean == pytest.approx(0.0) and imagenet.sd == pytest.approx(3**0.5)
    assert imagenet.beyond_twice_spread is False
    assert comparison.row("mine", "10%") == pytest.approx((42.0, 2.0))
    table = comparison.format_table()
    assert "labels 10% (37 of 367 images), seeds 0, 1, 2" in table
    assert "+10.0 ± 3.0  yes" in table and "+0.0 ± 1.7  no" in table
    saved = json.loads(json.dumps(comparison.to_dict()))
    row = saved["labels"]["10%"]["rows"]["random"]
    assert row["margin_to_first"] == {"mean": 10.0, "sd": 3.0, "beyond_twice_spread": True}
    assert saved["labels"]["10%"]["count"] == 37


def test_the_command_prints_the_table_and_writes_json_and_a_curve(scenes, tmp_path, capsys):
    out = tmp_path / "scores.json"
    argv = ["eval", "finetune-seg", "--weights", "random", "--backbone", "resnet18", "--data",
            str(scenes), "--compare", "random", "--labels", "4", "50%", "--seeds", "1",
            "--iterations", "1", "--batch-size", "2", "--crop-size", "32", "--workers", "0",
            "--json", str(out), "--plot", str(tmp_path / "curve.png")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "labels 4 (4 of 12 images), seeds 0" in printed and "labels 50% (6 of 12" in printed
    assert "n/a (1 seed)" in printed
    saved = json.loads(out.read_text())
    assert set(saved["labels"]) == {"4", "50%"} and saved["inits"]["random"] == "random"
    assert len(saved["labels"]["4"]["subsets"]["0"]) == 4
    assert (tmp_path / "curve.png").stat().st_size > 1000


# --- mistakes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "word"), [("0", "more than 0"), ("150%", "at most 100%"), ("301", "only 300"),
                         ("ten", "share such as")],
)  # fmt: skip
def test_labels_that_cannot_be_meant_are_one_line(tmp_path, capsys, labels, word):
    argv = ["eval", "finetune-seg", "--weights", "random", "--backbone", "resnet18", "--labels",
            labels]  # fmt: skip
    assert word in refused(capsys, argv, tmp_path)


def test_a_decoder_the_backbone_cannot_feed_is_one_line(tmp_path, capsys):
    argv = ["eval", "finetune-seg", "--weights", "random", "--backbone", "vit_test_patch8",
            "--decoder", "fpn"]  # fmt: skip
    assert "decoder=linear" in refused(capsys, argv, tmp_path)


def test_a_subset_without_some_class_is_warned_about(tmp_path, caplog):
    import densessl.api as ds

    data = two_colour_camvid(tmp_path / "camvid")
    caplog.set_level("WARNING", logger="densessl")
    ds.linear_seg("random", data, backbone="resnet18", labels="2", image_size=32, epochs=1)
    said = [r.getMessage() for r in caplog.records if "no labelled pixel of" in r.getMessage()]
    assert len(said) == 1 and "Building" in said[0] and "Sky" not in said[0]


def test_the_probes_learn_from_the_subset_only(monkeypatch, scenes):
    import densessl.api as ds
    import densessl.eval.knn_seg as knn

    sizes = []
    real = knn.knn_seg

    def recording(model, train, val, options):
        sizes.append(len(train))
        return real(model, train, val, options)

    monkeypatch.setattr(knn, "knn_seg", recording)
    ds.knn_seg("random", scenes, backbone="resnet18", labels="25%", image_size=32, k=3)
    assert sizes == [3]


def test_detection_learns_from_the_labelled_subset_only(tmp_path, monkeypatch):
    import densessl.eval.detection.finetune as detection
    from densessl.eval.detection import DetectOptions, write_synthetic_coco

    root = write_synthetic_coco(tmp_path / "coco", num_images=8, image_size=64)
    trained_on = []

    def stop_after_recording(detector, train, *args, **kwargs):
        trained_on.append([train.describe(i) for i in range(len(train))])
        raise RuntimeError("recorded")

    monkeypatch.setattr(detection, "train_detector", stop_after_recording)
    for seed in (0, 0, 1):
        with pytest.raises(RuntimeError, match="recorded"):
            detection.finetune_detector(None, root, DetectOptions(labels="50%", seed=seed,
                                                                  device="cpu"))  # fmt: skip
    assert len(trained_on[0]) == 4 and trained_on[0] == trained_on[1] != trained_on[2]
