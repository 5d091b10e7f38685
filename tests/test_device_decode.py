"""``data.decode=gpu``: JPEGs decoded after the transfer, views cut there. Run here on the CPU
(``decode_jpeg`` decodes on either), against the CPU path's views; and the fallback to the CPU
path, with one log line, where nvJPEG cannot run."""

from __future__ import annotations

import logging

import torch
from PIL import Image
from test_reduced_decode import smooth_jpeg

from densessl.config import build_config
from densessl.data.batch import Batch, collate_views
from densessl.data.device_decode import EncodedViewsTransform, collate_encoded
from densessl.data.pretrain import MultiViewDataset
from densessl.data.sources import ImageFolder
from densessl.data.views import MultiViewTransform, ViewSpec
from densessl.engine.setup import build_loader, build_source
from densessl.methods import build_method, get_method


def folder_of_images(root):
    root.mkdir(exist_ok=True)
    for i, (w, h) in enumerate([(320, 240), (200, 300), (256, 256)]):
        smooth_jpeg(root / f"{i}.jpg", w, h, seed=i)
    Image.new("RGB", (180, 120), (40, 90, 200)).save(root / "3.png")  # cut in the worker
    return root


def test_views_cut_after_decoding_on_the_device_equal_the_cpu_views(tmp_path):
    folder = ImageFolder(folder_of_images(tmp_path), reduced_decode=True)
    transform = MultiViewTransform([ViewSpec(64), ViewSpec(48, scale=(0.5, 1.0))])
    cpu_set = MultiViewDataset(ImageFolder(tmp_path), transform, seed=7)
    cpu = collate_views([cpu_set[(1, i)] for i in range(4)])
    encoded_set = MultiViewDataset(folder, EncodedViewsTransform(transform), seed=7)
    samples = [encoded_set[(1, i)] for i in range(4)]
    decoded = collate_encoded(samples, [(64, 64), (48, 48)]).to("cpu")
    assert isinstance(decoded, Batch) and not decoded.augmented
    assert sum(not isinstance(s["views"], list) for s in samples) == 3  # the JPEGs stayed encoded
    torch.testing.assert_close(decoded.crop_boxes, cpu.crop_boxes, rtol=0, atol=0)
    assert torch.equal(decoded.flipped, cpu.flipped) and torch.equal(decoded.index, cpu.index)
    assert torch.equal(decoded.source_sizes, cpu.source_sizes)
    assert torch.equal(decoded.photometric, cpu.photometric)
    for got, want in zip(decoded.views, cpu.views, strict=True):
        assert got.shape == want.shape and got.dtype == torch.uint8
        # Same region and mirror, another resampling filter: a few grey levels apart.
        diff = (got.float() - want.float()).abs().mean(dim=(1, 2, 3))
        assert (diff < 3.0).all(), diff
        assert torch.equal(got[3], want[3])  # the PNG came through as the worker cut it


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_gpu_decode_without_cuda_falls_back_to_the_cpu_path_with_one_log_line(tmp_path):
    overrides = [f"data.path={folder_of_images(tmp_path / 'images')}", "data.decode=gpu",
                 "data.workers=0", "batch_size=2", "data.image_size=32", "backbone=resnet18",
                 f"out={tmp_path / 'run'}", "steps=1"]  # fmt: skip
    cfg = build_config(get_method("densecl"), overrides=overrides)
    logger, handler = logging.getLogger("densessl"), Lines()
    logger.addHandler(handler)  # densessl's logger does not propagate to pytest's capture
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        loader = build_loader(cfg, build_source(cfg), build_method(cfg), torch.device("cpu"), 0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [line for line in handler.lines if "data.decode=gpu" in line]
    assert len(lines) == 1 and "CPU" in lines[0], lines
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.views[0].dtype == torch.float32  # augmented, CPU
