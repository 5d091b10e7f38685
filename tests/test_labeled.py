"""Labelled segmentation layouts: detection, label remapping, splits, errors, synthetic export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densessl.data.synthetic import SyntheticScenes
from densessl.errors import DataError
from densessl.eval.scene_export import held_out_seed
from densessl.eval.segmentation import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    IGNORE_INDEX,
    LAYOUTS,
    VOC_CLASSES,
    SegmentationDataset,
    SyntheticSegmentation,
    detect_format,
    open_segmentation,
    write_synthetic_segmentation,
)

HEIGHT, WIDTH = 16, 24


def gradient_rgb(seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([x * 9 + seed, y * 13, (x + y) * 5], axis=-1).astype(np.uint8)


def stripes(values: list[int]) -> np.ndarray:
    """(HEIGHT, WIDTH) uint8 label with vertical stripes of ``values``, left to right."""
    columns = np.array(values, dtype=np.uint8)[np.arange(WIDTH) * len(values) // WIDTH]
    return np.broadcast_to(columns, (HEIGHT, WIDTH)).copy()


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_palette(indices: np.ndarray, path: Path) -> Path:
    """A palette PNG like VOC's: pixels are indices, the palette only colours them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    image.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
    image.save(path)
    return path


def expected(stored: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    return np.vectorize(lambda v: mapping.get(int(v), int(v)))(stored).astype(np.int64)


def check(dataset: SegmentationDataset, i: int, labels: np.ndarray, path: Path) -> None:
    image, target = dataset[i]
    assert image.mode == "RGB" and image.size == (WIDTH, HEIGHT)
    assert target.dtype == np.int64 and target.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(target, labels)
    assert dataset.describe(i) == str(path)


CAMVID_STORED = stripes([0, 3, 10, 11])


@pytest.fixture
def camvid(tmp_path: Path) -> Path:
    for split, count in (("train", 2), ("val", 1)):
        for i in range(count):
            save(gradient_rgb(i), tmp_path / split / f"f{i}.png")
            save(CAMVID_STORED, tmp_path / f"{split}annot" / f"f{i}.png")
    return tmp_path


def test_camvid_void_becomes_ignore(camvid: Path) -> None:
    for format in (None, "camvid", "CamVid"):
        dataset = open_segmentation(camvid, format=format)
        assert isinstance(dataset, SegmentationDataset)
        assert len(dataset) == 2 and dataset.num_classes == 11 == len(dataset.class_names)
        assert dataset.class_names == list(CAMVID_CLASSES) and dataset.ignore_index == 255
        check(dataset, 1, expected(CAMVID_STORED, {11: 255}), camvid / "train" / "f1.png")
    assert len(open_segmentation(camvid, split="val")) == 1


def test_camvid_missing_label_and_split_name_the_path(camvid: Path) -> None:
    (camvid / "trainannot" / "f1.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(camvid / "train" / "f1.png"))):
        open_segmentation(camvid)
    with pytest.raises(DataError, match=re.escape(str(camvid / "test"))):
        open_segmentation(camvid, split="test")


def test_size_mismatch_and_undefined_value_name_the_file(camvid: Path) -> None:
    save(np.zeros((HEIGHT + 1, WIDTH), np.uint8), camvid / "trainannot" / "f0.png")
    save(np.full((HEIGHT, WIDTH), 12, np.uint8), camvid / "trainannot" / "f1.png")
    dataset = open_segmentation(camvid)
    with pytest.raises(DataError, match=re.escape(f"{camvid / 'train' / 'f0.png'} is 24x16")):
        dataset[0]
    with pytest.raises(
        DataError, match=re.escape(f"{camvid / 'trainannot' / 'f1.png'} holds value 12")
    ):
        dataset[1]


VOC_STORED = stripes([0, 15, 20, 255])


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    names = {"train": ["2007_000032", "2007_000039"], "val": ["2008_000001"]}
    for split, ids in names.items():
        for name in ids:
            Image.fromarray(gradient_rgb()).save(_parent(voc / "JPEGImages" / f"{name}.jpg"))
            save_palette(VOC_STORED, voc / "SegmentationClass" / f"{name}.png")
        lists = _parent(voc / "ImageSets" / "Segmentation" / f"{split}.txt")
        lists.write_text("\n".join(ids) + "\n")
    return tmp_path


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_voc_palette_indices_are_classes(voc: Path) -> None:
    nested = voc / "VOCdevkit" / "VOC2012"
    for root, format in ((voc, None), (nested, None), (voc, "voc")):
        dataset = open_segmentation(root, format=format)
        assert len(dataset) == 2 and dataset.class_names == list(VOC_CLASSES)
        check(dataset, 0, VOC_STORED.astype(np.int64), nested / "JPEGImages" / "2007_000032.jpg")
    assert len(open_segmentation(voc, split="val")) == 1
    with pytest.raises(
        DataError, match=re.escape(str(nested / "ImageSets" / "Segmentation" / "test.txt"))
    ):
        open_segmentation(voc, split="test")


ADE_STORED = stripes([0, 1, 2, 150])


def test_ade20k_shifts_classes_and_ignores_zero(tmp_path: Path) -> None:
    for folder in ("training", "validation"):
        save(gradient_rgb(), tmp_path / "images" / folder / f"ADE_{folder}_1.jpg")
        save(ADE_STORED, tmp_path / "annotations" / folder / f"ADE_{folder}_1.png")
    remapped = expected(ADE_STORED, {0: 255, 1: 0, 2: 1, 150: 149})
    for format in (None, "ade20k"):
        dataset = open_segmentation(tmp_path, format=format)
        assert dataset.num_classes == 150 == len(set(ADE20K_CLASSES))
        check(dataset, 0, remapped, tmp_path / "images" / "training" / "ADE_training_1.jpg")
    val = open_segmentation(tmp_path, split="val")
    assert val.describe(0).endswith("ADE_validation_1.jpg")


CITYSCAPES_STORED = stripes([7, 8, 33, 0, 5, 34])


def test_cityscapes_label_ids_become_train_ids(tmp_path: Path) -> None:
    stems = ("aachen/aachen_000000_000019", "bonn/bonn_000001_000019")
    for stem in stems:
        save(gradient_rgb(), tmp_path / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png")
        save(CITYSCAPES_STORED, tmp_path / "gtFine" / "train" / f"{stem}_gtFine_labelIds.png")
        # Other gtFine files sit beside the label ids and must not be mistaken for them.
        save(CITYSCAPES_STORED * 0, tmp_path / "gtFine" / "train" / f"{stem}_gtFine_color.png")
    remapped = expected(CITYSCAPES_STORED, {7: 0, 8: 1, 33: 18, 0: 255, 5: 255, 34: 255})
    for format in (None, "cityscapes"):
        dataset = open_segmentation(tmp_path, format=format)
        assert len(dataset) == 2 and dataset.num_classes == 19
        assert dataset.class_names[0] == "road" and dataset.class_names[-1] == "bicycle"
        path = tmp_path / "leftImg8bit" / "train" / f"{stems[1]}_leftImg8bit.png"
        check(dataset, 1, remapped, path)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "leftImg8bit" / "val"))):
        open_segmentation(tmp_path, split="val")


FOLDERS_STORED = stripes([0, 1, 2, 255])


def write_folders(root: Path, splits: tuple[str, ...]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    for split in splits:
        base = root / split
        save(gradient_rgb(), base / "images" / "a.jpg")
        save(gradient_rgb(1), base / "images" / "b.png")
        save(FOLDERS_STORED, base / "masks" / "a.png")
        save(FOLDERS_STORED, base / "masks" / "b.png")


def test_folders_with_and_without_splits(tmp_path: Path) -> None:
    write_folders(tmp_path / "split", ("train", "val"))
    write_folders(tmp_path / "flat", ("",))
    for root in (tmp_path / "split", tmp_path / "flat"):
        for format in (None, "folders"):
            dataset = open_segmentation(root, format=format, split="val")
            assert dataset.class_names == ["sky", "road", "car"] and dataset.num_classes == 3
            base = root / "val" if root.name == "split" else root
            check(dataset, 1, FOLDERS_STORED.astype(np.int64), base / "images" / "b.png")


def test_folders_errors_name_the_path(tmp_path: Path) -> None:
    write_folders(tmp_path, ("train",))
    save(np.full((HEIGHT, WIDTH), 3, np.uint8), tmp_path / "train" / "masks" / "b.png")
    with pytest.raises(
        DataError, match=re.escape(f"{tmp_path / 'train' / 'masks' / 'b.png'} holds value 3")
    ):
        open_segmentation(tmp_path)[1]
    (tmp_path / "train" / "masks" / "a.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "train" / "masks" / "a.png"))):
        open_segmentation(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "classes.txt"))):
        open_segmentation(tmp_path, format="folders")


def test_empty_split_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(DataError, match=re.escape(f"empty: no images in {tmp_path / 'train'}")):
        open_segmentation(tmp_path)


def test_unknown_layout_lists_layouts_and_suggests_format(tmp_path: Path) -> None:
    save(gradient_rgb(), tmp_path / "photo.png")
    with pytest.raises(DataError, match="--format") as error:
        open_segmentation(tmp_path)
    assert str(tmp_path) in str(error.value) and all(name in str(error.value) for name in LAYOUTS)
    with pytest.raises(DataError, match="unknown segmentation format 'coco'"):
        open_segmentation(tmp_path, format="coco")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing"))):
        open_segmentation(tmp_path / "missing")


def test_label_drawn_on_the_upright_photo_rotates_the_image(tmp_path: Path) -> None:
    write_folders(tmp_path, ("train",))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to view upright
    Image.fromarray(gradient_rgb()).save(tmp_path / "train" / "images" / "a.jpg", exif=exif)
    save(FOLDERS_STORED.T.copy(), tmp_path / "train" / "masks" / "a.png")
    image, labels = open_segmentation(tmp_path)[0]
    assert image.size == (HEIGHT, WIDTH) and labels.shape == (WIDTH, HEIGHT)


def test_synthetic_export_round_trips(tmp_path: Path) -> None:
    out = write_synthetic_segmentation(tmp_path / "scenes", num_images=5, image_size=32, seed=3)
    manifest = json.loads((out / "densessl_dataset.json").read_text())
    assert manifest["format"] == "folders" and manifest["splits"] == ["train", "val"]
    assert manifest["classes"] == list(SyntheticScenes.class_names)
    assert manifest["ignore_index"] == 255 and manifest["seed"] == 3
    assert detect_format(out) == "folders"
    train, val = open_segmentation(out), open_segmentation(out, split="val")
    assert len(train) == 5 and len(val) == 1 and train.num_classes == 5
    scenes = SyntheticScenes(5, 32, seed=3)
    for i in range(5):
        image, labels = train[i]
        np.testing.assert_array_equal(labels, scenes.scene(i).mask)
        np.testing.assert_array_equal(np.asarray(image), scenes.scene(i).image)
    held_out = SyntheticScenes(1, 32, seed=held_out_seed(3)).scene(0)
    np.testing.assert_array_equal(val[0][1], held_out.mask)
    assert not np.array_equal(val[0][0], scenes.scene(0).image)


def test_synthetic_export_replaces_itself_and_spares_other_folders(tmp_path: Path) -> None:
    out = write_synthetic_segmentation(tmp_path / "scenes", num_images=4, image_size=16)
    write_synthetic_segmentation(out, num_images=2, image_size=16)
    assert len(open_segmentation(out)) == 2
    save(gradient_rgb(), tmp_path / "photos" / "mine.png")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "photos"))):
        write_synthetic_segmentation(tmp_path / "photos", num_images=1, image_size=16)


def test_synthetic_segmentation_matches_the_scenes() -> None:
    dataset = SyntheticSegmentation(num_images=3, image_size=24, seed=5)
    assert isinstance(dataset, SegmentationDataset)
    assert len(dataset) == 3 and dataset.num_classes == 5 and dataset.ignore_index == IGNORE_INDEX
    assert dataset.class_names == list(SyntheticScenes.class_names)
    scene = SyntheticScenes(3, 24, seed=5).scene(2)
    image, labels = dataset[2]
    np.testing.assert_array_equal(np.asarray(image), scene.image)
    np.testing.assert_array_equal(labels, scene.mask)
    assert dataset.describe(2) == "synthetic scene 2"
    with pytest.raises(IndexError):
        dataset[3]
