"""Batched photometric ops against torchvision and plain float64 references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from densessl.data import augment
from densessl.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_PHOTOMETRIC_PARAMS,
    OP_BRIGHTNESS,
    OP_CONTRAST,
    OP_HUE,
    OP_SATURATION,
    P_BLUR_SIGMA,
    P_BRIGHTNESS,
    P_CONTRAST,
    P_GRAYSCALE,
    P_HUE,
    P_JITTER,
    P_ORDER,
    P_SATURATION,
    P_SOLARIZE,
    apply_photometric,
    draw_photometric,
)
from densessl.data.views import PhotometricSpec

# torchvision's luma weights are 0.2989/0.587/0.114, ours 0.299/0.587/0.114: 1e-4 apart.
GRAY_TOL = 2e-4


def random_images(batch: int = 4, size: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


def identity_params(batch: int) -> torch.Tensor:
    params = torch.zeros(batch, NUM_PHOTOMETRIC_PARAMS)
    params[:, P_BRIGHTNESS : P_SATURATION + 1] = 1.0
    params[:, P_ORDER : P_ORDER + 4] = torch.arange(4.0)
    return params


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (x - mean) / std


FACTORS = torch.tensor([0.6, 1.0, 1.3, 1.4])


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (augment.adjust_brightness, TF.adjust_brightness),
        (augment.adjust_contrast, TF.adjust_contrast),
        (augment.adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blend_ops_match_torchvision(ours, reference):
    x = random_images()
    out = ours(x.clone(), FACTORS)
    for i in range(len(x)):
        expected = reference(x[i], float(FACTORS[i]))
        torch.testing.assert_close(out[i], expected, atol=GRAY_TOL, rtol=0)


def test_hue_matches_torchvision():
    x = random_images(batch=5)
    shifts = torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1])
    out = augment.adjust_hue(x, shifts)
    for i in range(len(x)):
        expected = TF.adjust_hue(x[i], float(shifts[i]))
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


def test_hue_of_primary_colours():
    # Pure red shifted by a third of a turn is pure green; by two thirds, pure blue.
    red = torch.zeros(3, 3, 2, 2)
    red[:, 0] = 1.0
    out = augment.adjust_hue(red, torch.tensor([1 / 3, -1 / 3, 0.0]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision_and_replicates():
    x = random_images()
    out = augment.grayscale(x)
    expected = TF.rgb_to_grayscale(x, num_output_channels=3)
    torch.testing.assert_close(out, expected, atol=GRAY_TOL, rtol=0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def reference_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Direct float64 2-D convolution with the outer product of a radius-ceil(3 sigma) Gaussian."""
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel_1d = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel_1d /= kernel_1d.sum()
    kernel = torch.outer(kernel_1d, kernel_1d)[None, None].repeat(3, 1, 1, 1)
    padded = F.pad(image[None].double(), (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


def test_blur_matches_direct_convolution_per_sigma():
    x = random_images(batch=3, size=32)
    sigmas = torch.tensor([0.3, 1.0, 2.0])  # radii 1, 3, 6 in one batch
    out = augment.gaussian_blur(x, sigmas)
    for i in range(len(x)):
        expected = reference_blur(x[i], float(sigmas[i])).float()
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
        radius = math.ceil(3 * float(sigmas[i]))
        tv = TF.gaussian_blur(x[i], [2 * radius + 1] * 2, [float(sigmas[i])] * 2)
        torch.testing.assert_close(out[i], tv, atol=1e-5, rtol=0)


def test_solarize_inverts_the_bright_half():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.8, 1.0]).reshape(1, 1, 1, 6)
    expected = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.2, 0.0]).reshape(1, 1, 1, 6)
    torch.testing.assert_close(augment.solarize(x), expected)


def test_identity_params_only_normalise():
    images = torch.randint(0, 256, (3, 3, 16, 20), dtype=torch.uint8)
    out = apply_photometric(images, identity_params(3))
    assert out.dtype == torch.float32
    assert torch.equal(out, normalise(images.float() / 255))


def sequential_reference(image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """One image, ops applied one at a time with torchvision, in the order of ``params``."""
    ops = {
        OP_BRIGHTNESS: lambda x: TF.adjust_brightness(x, float(params[P_BRIGHTNESS])),
        OP_CONTRAST: lambda x: TF.adjust_contrast(x, float(params[P_CONTRAST])),
        OP_SATURATION: lambda x: TF.adjust_saturation(x, float(params[P_SATURATION])),
        OP_HUE: lambda x: TF.adjust_hue(x, float(params[P_HUE])),
    }
    x = image.float() / 255
    if params[P_JITTER] > 0.5:
        for op_id in params[P_ORDER : P_ORDER + 4].long().tolist():
            x = ops[op_id](x)
    if params[P_GRAYSCALE] > 0.5:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if params[P_BLUR_SIGMA] > 0:
        x = reference_blur(x, float(params[P_BLUR_SIGMA])).float()
    if params[P_SOLARIZE] > 0.5:
        x = torch.where(x >= 0.5, 1 - x, x)
    return normalise(x[None])[0]


def jitter_params(order: list[int]) -> torch.Tensor:
    params = identity_params(1)[0]
    params[P_JITTER] = 1.0
    params[P_BRIGHTNESS] = 1.35
    params[P_CONTRAST] = 0.65
    params[P_SATURATION] = 1.4
    params[P_HUE] = 0.08
    params[P_ORDER : P_ORDER + 4] = torch.tensor(order, dtype=torch.float32)
    return params


def test_jitter_order_matters_and_each_matches_its_sequence():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    images[1] = images[0]
    params = torch.stack([jitter_params([0, 1, 2, 3]), jitter_params([3, 2, 1, 0])])
    out = apply_photometric(images, params)
    assert (out[0] - out[1]).abs().max() > 0.05
    for i in range(2):
        torch.testing.assert_close(
            out[i], sequential_reference(images[i], params[i]), atol=3e-3, rtol=0
        )


def test_batched_equals_per_sample_and_sequential_reference():
    generator = torch.Generator().manual_seed(3)
    spec = PhotometricSpec(solarize_p=0.3)
    params = torch.stack([draw_photometric(spec, generator) for _ in range(12)])
    images = torch.randint(0, 256, (12, 3, 20, 20), dtype=torch.uint8, generator=generator)
    batched = apply_photometric(images, params)
    for i in range(12):
        single = apply_photometric(images[i : i + 1], params[i : i + 1])[0]
        torch.testing.assert_close(batched[i], single, atol=1e-5, rtol=0)
        # 3e-3 in normalised units (< 1e-3 in [0, 1]) leaves room only for the luma weights.
        reference = sequential_reference(images[i], params[i])
        torch.testing.assert_close(batched[i], reference, atol=3e-3, rtol=0)


def test_draw_photometric_ranges_and_frequencies():
    generator = torch.Generator().manual_seed(0)
    spec = PhotometricSpec(solarize_p=0.2)
    params = torch.stack([draw_photometric(spec, generator) for _ in range(2000)])
    jitter = params[:, P_JITTER] > 0.5
    assert abs(jitter.float().mean() - spec.jitter_p) < 0.04
    assert abs((params[:, P_GRAYSCALE] > 0.5).float().mean() - spec.grayscale_p) < 0.04
    assert abs((params[:, P_BLUR_SIGMA] > 0).float().mean() - spec.blur_p) < 0.04
    assert abs((params[:, P_SOLARIZE] > 0.5).float().mean() - spec.solarize_p) < 0.04
    on = params[jitter]
    for column, spread in ((P_BRIGHTNESS, 0.4), (P_CONTRAST, 0.4), (P_SATURATION, 0.4)):
        assert on[:, column].min() >= 1 - spread and on[:, column].max() <= 1 + spread
        assert on[:, column].min() < 1 - 0.9 * spread and on[:, column].max() > 1 + 0.9 * spread
    assert on[:, P_HUE].abs().max() <= 0.1
    sigma = params[:, P_BLUR_SIGMA][params[:, P_BLUR_SIGMA] > 0]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    orders = params[:, P_ORDER : P_ORDER + 4].sort(dim=1).values
    assert torch.equal(orders, torch.arange(4.0).expand_as(orders))  # always a permutation
    assert len({tuple(row) for row in params[:, P_ORDER : P_ORDER + 4].tolist()}) == 24


def test_draw_photometric_is_determined_by_the_generator():
    first = draw_photometric(PhotometricSpec(), torch.Generator().manual_seed(7))
    second = draw_photometric(PhotometricSpec(), torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
