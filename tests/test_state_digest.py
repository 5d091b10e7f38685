"""The weights digest behind the feature cache key and the fine-tune state's fingerprint."""

import hashlib
import struct

import pytest
import torch
from torch import nn

from densessl.models.state_digest import state_digest


def one_weight(value: float, dtype=torch.float32) -> nn.Module:
    layer = nn.Linear(1, 1, bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


def test_the_digest_is_sha256_of_name_dtype_shape_and_bytes():
    expected = hashlib.sha256(b"weight torch.float32 (1, 1)" + struct.pack("<f", 1.5)).hexdigest()
    assert state_digest(one_weight(1.5)) == expected


def test_one_ulp_changes_the_digest():
    value = torch.tensor(1.5)
    nudged = torch.nextafter(value, torch.tensor(2.0)).item()
    assert state_digest(one_weight(1.5)) == state_digest(one_weight(1.5))
    assert state_digest(one_weight(1.5)) != state_digest(one_weight(nudged))


def test_dtype_and_buffers_enter_the_digest():
    assert state_digest(one_weight(1.5)) != state_digest(one_weight(1.5, torch.float64))
    with_buffer = one_weight(1.5)
    with_buffer.register_buffer("count", torch.zeros(1))
    plain = state_digest(with_buffer)
    with_buffer.count += 1
    assert state_digest(with_buffer) != plain


@pytest.mark.gpu
def test_the_device_does_not_enter_the_digest():
    layer = one_weight(1.5)
    assert state_digest(layer.cuda()) == state_digest(one_weight(1.5))
