"""CUDA-only checks: mixed precision and on-device augmentation. Skipped without a GPU."""

from __future__ import annotations

import json

import pytest

from densessl.cli import main

from conftest import tiny_overrides

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_densecl_trains_on_cuda(tmp_path, precision):
    overrides = tiny_overrides(tmp_path, steps=3, device="cuda", precision=precision)
    assert main(["pretrain", "--method", "densecl", *overrides, "data.augment_on=device"]) == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["loss"] == r["loss"] for r in records)


def test_densecl_trains_on_cuda_with_gpu_jpeg_decoding(tmp_path):
    """data.decode=gpu (nvJPEG), channels_last (the default on CNNs) and pinned transfers."""
    from test_device_decode import folder_of_images

    images = folder_of_images(tmp_path / "images")
    overrides = tiny_overrides(tmp_path / "run", steps=2, device="cuda", batch_size=4)
    overrides += [f"data.path={images}", "data.decode=gpu", "data.workers=1"]
    assert main(["pretrain", "--method", "densecl", *overrides]) == 0
    text = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(text) == 2 and all(json.loads(x)["loss"] == json.loads(x)["loss"] for x in text)


def test_views_decoded_by_nvjpeg_equal_the_cpu_views(tmp_path):
    import torch
    from test_device_decode import folder_of_images

    from densessl.data.batch import collate_views
    from densessl.data.device_decode import EncodedViewsTransform, collate_encoded
    from densessl.data.pretrain import MultiViewDataset
    from densessl.data.sources import ImageFolder
    from densessl.data.views import MultiViewTransform, ViewSpec

    folder_of_images(tmp_path)
    transform = MultiViewTransform([ViewSpec(64), ViewSpec(48)])
    cpu_set = MultiViewDataset(ImageFolder(tmp_path), transform, seed=7)
    cpu = collate_views([cpu_set[(0, i)] for i in range(4)])
    gpu_set = MultiViewDataset(ImageFolder(tmp_path, True), EncodedViewsTransform(transform), 7)
    gpu = collate_encoded([gpu_set[(0, i)] for i in range(4)], [(64, 64), (48, 48)]).to("cuda")
    assert torch.equal(gpu.crop_boxes.cpu(), cpu.crop_boxes)
    for got, want in zip(gpu.views, cpu.views, strict=True):
        assert got.is_cuda
        assert (got.cpu().float() - want.float()).abs().mean() < 3.0


def test_a_compiled_densecl_step_runs_on_cuda(tmp_path):
    overrides = tiny_overrides(tmp_path, steps=2, device="cuda", compile="true")
    assert main(["pretrain", "--method", "densecl", *overrides]) == 0


def test_a_fine_tune_trains_resumes_and_scores_on_cuda(tmp_path):
    """bf16 autocast on CUDA; the state saved from the GPU continues there (the optimizer's
    moments go back to the device) and the scores are finite."""
    import torch
    from test_finetune_seg import InterruptedAt, StripeSet

    from densessl.eval.finetune_seg import FinetuneSegOptions, finetune_seg
    from densessl.eval.weights import load_backbone

    options = FinetuneSegOptions(iterations=6, batch_size=2, crop_size=32, workers=0,
                                 warmup_iterations=2, device="cuda")  # fmt: skip
    train, val = StripeSet(6, seed=0, size=32), StripeSet(2, seed=1, size=32)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        finetune_seg(load_backbone("random", "resnet18"), InterruptedAt(train, 7), val, options,
                     state_file=state)  # fmt: skip
    assert torch.load(state, weights_only=True)["step"] == 4
    result = finetune_seg(load_backbone("random", "resnet18"), train, val, options,
                          state_file=state)  # fmt: skip
    assert next(result.model.parameters()).is_cuda and result.final_loss == result.final_loss
    assert 0 <= result.scores.miou <= 100
