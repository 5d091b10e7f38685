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
