"""JPEG decoding on the training device (opt-in, ``data.decode=gpu``): workers ship file bytes.

Workers draw each JPEG's views but decode nothing; :meth:`EncodedBatch.to` decodes with nvJPEG
(``torchvision.io.decode_jpeg``) and cuts each view (crop, antialiased bilinear, flip; uint8).
Other files (PNGs, EXIF-rotated photos) travel as CPU-cut pixels. Also runs on the CPU (tests).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from densessl.data.batch import Batch
from densessl.data.reduced_decode import DeferredJpeg
from densessl.data.views import MultiViewTransform, View, ViewDraw


@dataclass
class EncodedViews:
    """One image's views before decoding: the file's bytes and the drawn choices."""

    data: torch.Tensor  # (bytes,) uint8, the JPEG file
    draws: list[ViewDraw]
    source_size: tuple[int, int]  # (height, width)


class EncodedViewsTransform:
    """A :class:`MultiViewTransform` whose JPEGs are left encoded (see the module docstring);
    any other image gets the CPU views of the wrapped transform."""

    def __init__(self, transform: MultiViewTransform) -> None:
        self.transform = transform
        self.output_sizes = [spec.output_size for spec in transform.specs]

    def __call__(self, image, generator: torch.Generator) -> list[View]:
        return self.transform(image, generator)

    def from_deferred(self, jpeg: DeferredJpeg, generator: torch.Generator) -> EncodedViews:
        width, height = jpeg.size
        draws = self.transform.draw(width, height, generator)
        data = torch.frombuffer(bytearray(Path(jpeg.path).read_bytes()), dtype=torch.uint8)
        return EncodedViews(data, draws, (height, width))


@dataclass
class EncodedBatch:
    """A batch whose JPEG samples are still encoded; ``to(device)`` decodes it into a
    :class:`Batch`. ``samples`` holds, per image, an :class:`EncodedViews` or its CPU views."""

    samples: list[EncodedViews | list[View]]
    output_sizes: list[tuple[int, int]]
    index: torch.Tensor
    skipped: list[str] = field(default_factory=list)

    def pin_memory(self) -> EncodedBatch:
        return self  # a few hundred KB of bytes per batch: not worth page-locking

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Decode the JPEGs on ``device`` in one call and cut every view there."""
        encoded = [s for s in self.samples if isinstance(s, EncodedViews)]
        decoded = iter(decode_jpeg([s.data for s in encoded], mode=ImageReadMode.RGB,
                                   device=device) if encoded else [])  # fmt: skip
        views: list[list[torch.Tensor]] = [[] for _ in self.output_sizes]
        boxes, flipped, sizes, photometric = [], [], [], []
        for sample in self.samples:
            if isinstance(sample, EncodedViews):
                image = next(decoded)
                for v, (draw, size) in enumerate(zip(sample.draws, self.output_sizes, strict=True)):
                    views[v].append(cut_view(image, draw, size))
                draws = sample.draws
                sizes.append(sample.source_size)
            else:
                for v, view in enumerate(sample):
                    views[v].append(view.pixels.to(device, non_blocking=non_blocking))
                draws = [ViewDraw(x.geometry.crop_box, x.geometry.flipped, x.photometric)
                         for x in sample]  # fmt: skip
                sizes.append(sample[0].geometry.source_size)
            boxes.append([list(d.box) for d in draws])
            flipped.append([d.flipped for d in draws])
            photometric.append(torch.stack([d.photometric for d in draws]))
        return Batch(
            views=[torch.stack(v) for v in views],
            crop_boxes=torch.tensor(boxes, dtype=torch.float32).to(device),
            flipped=torch.tensor(flipped).to(device),
            source_sizes=torch.tensor(sizes, dtype=torch.long).to(device),
            photometric=torch.stack(photometric).float().to(device),
            index=self.index.to(device),
            skipped=self.skipped,
        )


def cut_view(image: torch.Tensor, draw: ViewDraw, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 source -> (3, h, w) uint8 view: crop ``draw.box`` (whole pixels, as
    drawn), bilinear antialiased resize to ``size``, mirror when ``draw.flipped``."""
    x0, y0, x1, y1 = (int(c) for c in draw.box)
    crop = image[:, y0:y1, x0:x1].float()[None]
    resized = F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=True)
    pixels = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    return pixels.flip(-1) if draw.flipped else pixels


def collate_encoded(samples: list[dict], output_sizes: list[tuple[int, int]]) -> EncodedBatch:
    """Collate the dataset's samples of an :class:`EncodedViewsTransform`."""
    return EncodedBatch(
        samples=[s["views"] for s in samples],
        output_sizes=output_sizes,
        index=torch.tensor([s["index"] for s in samples], dtype=torch.long),
        skipped=[path for s in samples for path in s["skipped"]],
    )


def device_decode_unavailable(device: torch.device) -> str | None:
    """Why nvJPEG decoding cannot run on ``device`` (None when it can)."""
    if device.type != "cuda":
        return f"the run is on {device.type}, not a CUDA device"
    encoded = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 64, 32)).save(encoded, format="JPEG")
    probe = torch.frombuffer(bytearray(encoded.getvalue()), dtype=torch.uint8)
    try:
        decode_jpeg([probe], device=device)
    except Exception as error:  # no nvJPEG in this torchvision build, driver problems ...
        return f"nvJPEG decoding failed ({type(error).__name__}: {error})".splitlines()[0]
    return None
