"""Batched photometric augmentation: the same code on CPU (data workers) or GPU (training step).

Parameters are drawn per view by :func:`draw_photometric` (the sample's seed) and applied in
batches by :func:`apply_photometric`, as torchvision / MoCo-v2: colour jitter (four ops in random
order, clamped to [0, 1] after each), grayscale, Gaussian blur, solarize, ImageNet normalisation.
The P-vector (``NUM_PHOTOMETRIC_PARAMS`` float32 per view):

====================  ==========================================================================
``P_JITTER``          1.0 if colour jitter applies, else 0.0 (then the factors below are identity)
``P_BRIGHTNESS``      brightness factor, U[max(0, 1 - b), 1 + b]
``P_CONTRAST``        contrast factor, U[max(0, 1 - c), 1 + c]
``P_SATURATION``      saturation factor, U[max(0, 1 - s), 1 + s]
``P_HUE``             hue shift in turns, U[-h, h]
``P_ORDER`` .. +3     jitter op ids in the order applied: ``OP_BRIGHTNESS`` (0) .. ``OP_HUE`` (3)
``P_GRAYSCALE``       1.0 if the view is turned to grayscale
``P_BLUR_SIGMA``      Gaussian blur sigma in pixels; 0.0 means no blur
``P_SOLARIZE``        1.0 if the view is solarized (x -> 1 - x where x >= 0.5)
====================  ==========================================================================

Blur: separable normalised Gaussian of radius ``ceil(3 s)``, reflect padding, radius capped at
``min(H, W) - 1`` (reflect padding's limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from densessl.data.normalization import IMAGENET_MEAN, IMAGENET_STD

P_JITTER = 0
P_BRIGHTNESS = 1
P_CONTRAST = 2
P_SATURATION = 3
P_HUE = 4
P_ORDER = 5
P_GRAYSCALE = 9
P_BLUR_SIGMA = 10
P_SOLARIZE = 11
NUM_PHOTOMETRIC_PARAMS = 12

OP_BRIGHTNESS = 0
OP_CONTRAST = 1
OP_SATURATION = 2
OP_HUE = 3
NUM_JITTER_OPS = 4

# ITU-R 601-2 luma, the weights of PIL's convert("L").
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(u: float, low: float, high: float) -> float:
    return low + (high - low) * u


@dataclass(frozen=True)
class PhotometricSpec:
    """Probabilities and ranges of the photometric augmentations (see ``augment``)."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


def draw_photometric(spec: PhotometricSpec, generator: torch.Generator) -> torch.Tensor:
    """Draw one view's (P,) float32 photometric parameters (layout: module docstring) from
    ``generator`` alone, consuming the same number of values whatever the outcome (so later
    views' draws never shift)."""
    u = torch.rand(9, generator=generator, dtype=torch.float64).tolist()
    order = torch.randperm(NUM_JITTER_OPS, generator=generator).tolist()
    params = torch.zeros(NUM_PHOTOMETRIC_PARAMS, dtype=torch.float64)
    jitter = u[0] < spec.jitter_p
    params[P_JITTER] = float(jitter)
    if jitter:
        params[P_BRIGHTNESS] = _uniform(u[1], max(0.0, 1 - spec.brightness), 1 + spec.brightness)
        params[P_CONTRAST] = _uniform(u[2], max(0.0, 1 - spec.contrast), 1 + spec.contrast)
        params[P_SATURATION] = _uniform(u[3], max(0.0, 1 - spec.saturation), 1 + spec.saturation)
        params[P_HUE] = _uniform(u[4], -spec.hue, spec.hue)
    else:
        params[P_BRIGHTNESS : P_SATURATION + 1] = 1.0
    params[P_ORDER : P_ORDER + NUM_JITTER_OPS] = torch.tensor(order, dtype=torch.float64)
    params[P_GRAYSCALE] = float(u[5] < spec.grayscale_p)
    if u[6] < spec.blur_p:
        params[P_BLUR_SIGMA] = _uniform(u[7], *spec.blur_sigma)
    params[P_SOLARIZE] = float(u[8] < spec.solarize_p)
    return params.float()


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast one value per image over (B, 3, H, W)."""
    return values.reshape(-1, 1, 1, 1)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images: (B, 3, H, W) float in [0, 1] -> (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] like torchvision."""
    f = _per_image(factor).to(x.dtype)
    return (f * x + (1 - f) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by ``factor``: (B, 3, H, W) in [0, 1], factor (B,) -> (B, 3, H, W)."""
    return (x * _per_image(factor).to(x.dtype)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each image's mean luma: (B, 3, H, W) in [0, 1], factor (B,) -> (B, 3, H, W)."""
    mean = to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's luma: (B, 3, H, W) in [0, 1], factor (B,) -> (B, 3, H, W)."""
    return _blend(x, to_grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) HSV, every channel in [0, 1) / [0, 1]."""
    r, g, b = x.unbind(dim=1)
    value, argmax = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    grey = chroma == 0
    # Where the pixel is grey hue and saturation are 0; divide by 1 there to avoid NaN.
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, 1.0), 0.0)
    # Hue in sixths of a turn, measured from the sector of the largest channel.
    from_red = ((g - b) / safe_chroma) % 6
    from_green = (b - r) / safe_chroma + 2
    from_blue = (r - g) / safe_chroma + 4
    sixths = torch.where(argmax == 0, from_red, torch.where(argmax == 1, from_green, from_blue))
    hue = torch.where(grey, torch.zeros_like(sixths), sixths / 6) % 1.0
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> (B, 3, H, W) RGB in [0, 1]."""
    hue, saturation, value = x.unbind(dim=1)
    # Each channel is value minus a piecewise-linear ramp of the hue: k is the channel's phase.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6) % 6
        ramp = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        channels.append(value - value * saturation * ramp)
    return torch.stack(channels, dim=1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns: (B, 3, H, W) in [0, 1], shift (B,) in [-0.5, 0.5]."""
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift.reshape(-1, 1, 1).to(x.dtype)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) luma replicated to three channels."""
    return to_grayscale(x).expand_as(x).contiguous()


def blur_radius(sigma: float) -> int:
    """Kernel radius for a Gaussian of ``sigma`` pixels: ceil(3 sigma)."""
    return math.ceil(3 * sigma)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2 radius + 1) normalised 1-D Gaussians of (B,) ``sigma`` on a shared tap grid (half-width
    ``radius`` >= every ``blur_radius(sigma)``), each cut to its own radius ceil(3 sigma), so a
    view's blur does not depend on the other views in its batch."""
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    own_radius = torch.ceil(3 * sigma).clamp(max=radius).unsqueeze(1)
    weights = torch.exp(-0.5 * (taps / sigma.unsqueeze(1)) ** 2)
    weights = torch.where(taps.abs() <= own_radius, weights, torch.zeros_like(weights))
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image: x (B, C, H, W) float, sigma (B,) > 0 ->
    (B, C, H, W) (kernel rule in the module docstring)."""
    batch, channels, height, width = x.shape
    radius = min(blur_radius(float(sigma.max())), height - 1, width - 1)
    if radius <= 0:
        return x
    kernels = gaussian_kernels(sigma.to(x.dtype), radius)  # (B, K)
    # One group per (image, channel), so every image is convolved with its own kernel.
    kernels = kernels.repeat_interleave(channels, dim=0)  # (B*C, K)
    flat = x.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=batch * channels)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert every value at or above ``threshold``: (B, 3, H, W) in [0, 1]."""
    return torch.where(x >= threshold, 1 - x, x)


JITTER_OPS = {
    OP_BRIGHTNESS: (adjust_brightness, P_BRIGHTNESS),
    OP_CONTRAST: (adjust_contrast, P_CONTRAST),
    OP_SATURATION: (adjust_saturation, P_SATURATION),
    OP_HUE: (adjust_hue, P_HUE),
}


def _apply_to(
    x: torch.Tensor, selected: torch.Tensor, op: Callable[..., torch.Tensor], *args: torch.Tensor
) -> torch.Tensor:
    """Apply ``op`` to the images where ``selected`` (B,) is True, in place; others untouched."""
    rows = selected.nonzero().squeeze(1)
    if rows.numel():
        x[rows] = op(x[rows], *(a[rows] for a in args))
    return x


def colour_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Each image's four jitter ops in its own order, on the images whose jitter flag is set:
    x (B, 3, H, W) float in [0, 1], updated in place (pass a copy to keep it); params (B, P)."""
    jitter = params[:, P_JITTER] > 0.5
    order = params[:, P_ORDER : P_ORDER + NUM_JITTER_OPS].round().long()
    for position in range(NUM_JITTER_OPS):
        for op_id, (op, column) in JITTER_OPS.items():
            selected = jitter & (order[:, position] == op_id)
            x = _apply_to(x, selected, op, params[:, column])
    return x


def apply_photometric(
    images: torch.Tensor,
    params: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Augment and normalise a batch of views, each with its own drawn parameters: images
    (B, 3, H, W) uint8 on any device, params (B, P) from :func:`draw_photometric` -> (B, 3, H, W)
    float32, ``(augmented - mean) / std``."""
    params = params.to(device=images.device, dtype=torch.float32)
    x = images.float() / 255
    x = colour_jitter(x, params)
    x = _apply_to(x, params[:, P_GRAYSCALE] > 0.5, grayscale)
    x = _apply_to(x, params[:, P_BLUR_SIGMA] > 0, gaussian_blur, params[:, P_BLUR_SIGMA])
    x = _apply_to(x, params[:, P_SOLARIZE] > 0.5, solarize)
    mean_t = torch.tensor(mean, device=images.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    return (x - mean_t) / std_t
