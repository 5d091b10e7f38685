"""Image folders: which files are found, how every PIL mode becomes RGB, what fails and how."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from densessl.data.pretrain import MultiViewDataset, sample_seed
from densessl.data.sources import ImageFolder, ImageSource, UnreadableImage, read_rgb
from densessl.data.synthetic import SyntheticScenes
from densessl.data.views import MultiViewTransform, ViewSpec
from densessl.errors import DataError


def gradient_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5, y * 7, (x + y) * 2], axis=-1).astype(np.uint8)


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One file of every kind; the name says what it is."""
    rgb = gradient_rgb()
    save(Image.fromarray(rgb), tmp_path / "good.png")
    save(Image.fromarray(rgb), tmp_path / "good.jpg", quality=95)
    jpeg_bytes = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    deep = np.zeros((4, 5), dtype=np.uint16)
    deep[0, 0], deep[0, 1], deep[0, 2] = 65535, 257 * 100, 0
    save(Image.fromarray(deep), tmp_path / "sixteen_bit.png")
    gray = np.full((6, 7), 123, dtype=np.uint8)
    save(Image.fromarray(gray, mode="L"), tmp_path / "gray.png")
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent pixel
    rgba[0, 1, 3] = 128  # half transparent
    save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "rgba.png")
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(palette, tmp_path / "palette.png")
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    save(cmyk, tmp_path / "cmyk.jpg", quality=100)
    save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "tiny.png")
    save(Image.fromarray(rgb), tmp_path / "nested" / "deeper" / "inner.png")
    save(Image.fromarray(rgb), tmp_path / "UPPER.JPG")
    save(Image.fromarray(rgb), tmp_path / ".hidden.png")
    save(Image.fromarray(rgb), tmp_path / ".hidden_dir" / "secret.png")
    (tmp_path / "notes.txt").write_text("not an image extension")
    return tmp_path


def names(source: ImageFolder) -> list[str]:
    return [
        Path(source.describe(i)).relative_to(source.root).as_posix() for i in range(len(source))
    ]


def test_scan_is_recursive_sorted_case_insensitive_and_skips_hidden(folder):
    source = ImageFolder(folder)
    assert isinstance(source, ImageSource)
    assert names(source) == [
        "UPPER.JPG",
        "cmyk.jpg",
        "empty.jpg",
        "good.jpg",
        "good.png",
        "gray.png",
        "nested/deeper/inner.png",
        "palette.png",
        "rgba.png",
        "sixteen_bit.png",
        "text.jpg",
        "tiny.png",
        "truncated.jpg",
    ]


def load(folder: Path, name: str) -> np.ndarray:
    image = read_rgb(folder / name)
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    return array


def test_readable_files_become_rgb_with_the_right_content(folder):
    assert np.array_equal(load(folder, "good.png"), gradient_rgb())
    assert np.abs(load(folder, "good.jpg").astype(int) - gradient_rgb()).mean() < 3
    assert load(folder, "UPPER.JPG").shape == (32, 48, 3)
    assert load(folder, "nested/deeper/inner.png").shape == (32, 48, 3)
    assert np.array_equal(load(folder, "tiny.png"), [[[10, 20, 30]]])
    assert np.all(load(folder, "gray.png") == 123)
    palette = load(folder, "palette.png")
    assert np.abs(palette.astype(int) - gradient_rgb()).mean() < 12
    cmyk = load(folder, "cmyk.jpg")
    assert np.all(np.abs(cmyk.astype(int) - [255, 0, 0]) <= 3)


def test_sixteen_bit_range_maps_onto_eight_bits(folder):
    assert Image.open(folder / "sixteen_bit.png").mode.startswith("I")
    deep = load(folder, "sixteen_bit.png")
    assert deep[0, 0].tolist() == [255, 255, 255]
    assert deep[0, 1].tolist() == [100, 100, 100]
    assert deep[0, 2].tolist() == [0, 0, 0]


def test_alpha_is_composited_on_black(folder):
    rgba = load(folder, "rgba.png")
    assert rgba[0, 0].tolist() == [0, 0, 0]
    assert (
        np.abs(rgba[0, 1].astype(int) - np.round(np.array([200, 100, 50]) * 128 / 255)).max() <= 1
    )
    assert rgba[3, 3].tolist() == [200, 100, 50]


def test_palette_with_transparency_is_composited(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    save(palette, tmp_path / "p.png", transparency=0)
    assert load(tmp_path, "p.png").tolist() == [[[0, 0, 0], [0, 255, 0]]]


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "text.jpg"])
def test_broken_files_raise_unreadable_image(folder, name):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(UnreadableImage) as caught:
        read_rgb(folder / name)
    assert caught.value.path == str(folder / name)
    assert caught.value.reason


def test_decompression_bomb_is_unreadable(tmp_path, monkeypatch):
    save(Image.new("RGB", (64, 64)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 * 64 > 2 * 100 -> error
    with pytest.raises(UnreadableImage):
        read_rgb(tmp_path / "bomb.png")


def test_missing_not_a_folder_and_empty_folder_are_data_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="not found") as caught:
        ImageFolder(missing)
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)
    file = tmp_path / "file.png"
    save(Image.new("RGB", (2, 2)), file)
    with pytest.raises(DataError, match="not a folder"):
        ImageFolder(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images") as caught:
        ImageFolder(empty)
    assert str(empty) in str(caught.value) and "\n" not in str(caught.value)


def test_dataset_substitutes_unreadable_files_and_warns_once(tmp_path):
    save(Image.fromarray(gradient_rgb()), tmp_path / "a_good.png")
    (tmp_path / "b_broken.jpg").write_bytes(b"\xff\xd8 broken")
    (tmp_path / "c_broken.png").write_bytes(b"")
    save(Image.fromarray(255 - gradient_rgb()), tmp_path / "d_good.png")
    source = ImageFolder(tmp_path)
    dataset = MultiViewDataset(source, MultiViewTransform([ViewSpec(16, flip_p=0.0)]), seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample = dataset[(0, 1)]
        again = dataset[(1, 1)]
    assert sample["index"] == 1
    assert sample["skipped"] == [str(tmp_path / "b_broken.jpg"), str(tmp_path / "c_broken.png")]
    assert again["skipped"] == sample["skipped"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # one per file, not one per access
    assert all(m.startswith("skipping unreadable image") for m in messages)
    # The substitute is d_good.png (the next readable index), with index 1's own seed.
    generator = torch.Generator().manual_seed(sample_seed(1, 0, 1))
    expected = dataset.transform(source.load_image(3), generator)[0]
    assert torch.equal(sample["views"][0].pixels, expected.pixels)


def test_dataset_with_only_unreadable_files_is_a_data_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"nope")
    dataset = MultiViewDataset(ImageFolder(tmp_path), MultiViewTransform([ViewSpec(8)]), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            dataset[(0, 0)]


def test_dataset_samples_depend_only_on_seed_epoch_index():
    source = SyntheticScenes(num_images=4, image_size=40)
    transform = MultiViewTransform([ViewSpec(16), ViewSpec(16)])
    first = MultiViewDataset(source, transform, seed=3)
    second = MultiViewDataset(source, transform, seed=3)
    a, b = first[(2, 1)], second[(2, 1)]
    assert all(torch.equal(x.pixels, y.pixels) for x, y in zip(a["views"], b["views"], strict=True))
    other_epoch = first[(3, 1)]
    assert other_epoch["views"][0].geometry != a["views"][0].geometry
    assert len({sample_seed(0, e, i) for e in range(5) for i in range(50)}) == 250
