"""Tar shards as ``--data``: written from a folder, read by index, the same images as the folder.

The strongest check is that a run on shards equals the run on the folder they were written
from, loss for loss: same images, same order, same skipped file. Every registered method takes
one step both ways (those with object proposals keyed by member name), and an interrupted
shard run resumes to the straight run's losses.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import densessl.engine.step as engine_step
from densessl.cli import main
from densessl.data.data_path import open_image_source, shard_files
from densessl.data.shard_writer import sample_keys, write_shards
from densessl.data.sources import ImageFolder, UnreadableImage
from densessl.data.tar_shards import TarShards, read_member_table
from densessl.engine.train import train
from densessl.errors import DataError
from densessl.registry import METHODS

from conftest import write_scene_folder
from engine_harness import engine_steps, tiny_config


@pytest.fixture
def folder(tmp_path):
    """Ten scene PNGs in two folders, one broken JPEG, and a name with dots."""
    root = write_scene_folder(tmp_path / "images" / "a", 5, 80, seed=0).parent
    write_scene_folder(root / "b", 4, 80, seed=1)
    (root / "b" / "scene_1.png").rename(root / "b" / "scene.v2.png")
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture
def shards(folder, tmp_path):
    out = tmp_path / "shards"
    written = write_shards(folder, out, shard_size=4)
    assert (written.images, written.shards) == (10, 3)
    return out


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- writing and reading ------------------------------------------------------------------------


def test_keys_drop_the_extension_and_dots_and_never_meet():
    names = ["a/x.png", "a/x.jpg", "b.v2.png", "b_v2.png", "c.png"]
    assert sample_keys(names) == ["a/x", "a/x_2", "b_v2", "b_v2_2", "c"]


def test_shards_hold_the_folder_images_in_its_order(folder, shards):
    images, shard = ImageFolder(folder), open_image_source(shards)
    assert isinstance(shard, TarShards) and len(shard) == len(images) == 10
    assert shard.keys == [f"{k}.{n.rsplit('.', 1)[1]}" for k, n in
                          zip(sample_keys(images.names), images.names, strict=True)]  # fmt: skip
    assert shard.key(0) == "a/broken.jpg" and "b/scene_v2.png" in shard.keys
    for i in range(1, 10):  # byte for byte the files, so pixel for pixel the images
        assert shard.read_bytes(i) == Path(images.path(i)).read_bytes()
        assert np.array_equal(np.asarray(shard.load_image(i)), np.asarray(images.load_image(i)))
    with pytest.raises(UnreadableImage, match=r"shard-000000\.tar:a/broken\.jpg"):
        shard.load_image(0)


def test_a_sample_image_is_its_first_image_member(tmp_path):
    path = tmp_path / "hand.tar"
    with tarfile.open(path, "w") as tar:
        _member(tar, "x.json", b"{}")
        _member(tar, "x.seg.png", _png(1))  # last extension png: the sample's image
        _member(tar, "x.jpg", _png(2))  # same sample, a second image: not another sample
        _member(tar, "y.txt", b"no image")  # a sample without an image is left out
        _member(tar, "dir/z.PNG", _png(3))
        _member(tar, "noextension", b"")
    table = read_member_table(str(path))
    assert [name for name, _, _ in table] == ["x.seg.png", "dir/z.PNG"]
    source = TarShards([path])
    assert source.load_image(0).getpixel((0, 0)) == (1, 0, 0)
    assert source.load_image(1).getpixel((0, 0)) == (3, 0, 0)


def test_a_shard_cut_short_keeps_its_whole_members(shards):
    shard = shards / "shard-000001.tar"
    full = TarShards([shard], cache=False)
    data = shard.read_bytes()
    cut = int(full.offsets[2]) + 10  # inside the third member's data
    shard.write_bytes(data[:cut])
    source = TarShards([shard], cache=False)
    assert source.names == full.names[:3]
    source.load_image(1)
    with pytest.raises(UnreadableImage, match="cut short"):
        source.load_image(2)


def test_a_file_that_is_no_tar_is_skipped_with_a_warning(shards):
    (shards / "shard-000003.tar").write_bytes(b"garbage" * 100)
    with pytest.warns(RuntimeWarning, match=r"skipping tar shard .*shard-000003\.tar"):
        source = open_image_source(shards)
    assert len(source) == 10


def test_member_tables_are_reused_until_the_shard_changes(shards, monkeypatch):
    import densessl.data.tar_shards as tar_shards

    first = TarShards(sorted(map(str, shards.glob("*.tar"))))
    monkeypatch.setattr(tar_shards, "read_member_table", lambda shard: pytest.fail(shard))
    again = TarShards(sorted(map(str, shards.glob("*.tar"))))
    assert again.names == first.names and again.offsets.tolist() == first.offsets.tolist()
    changed = shards / "shard-000002.tar"
    with tarfile.open(changed, "a") as tar:
        _member(tar, "late.png", _png(9))
    with pytest.raises(pytest.fail.Exception, match="shard-000002"):
        TarShards(sorted(map(str, shards.glob("*.tar"))))


# --- what --data names --------------------------------------------------------------------------


def test_data_names_shards_by_pattern_file_or_folder_of_tars(folder, shards, tmp_path):
    three = [str(shards / f"shard-00000{i}.tar") for i in range(3)]
    assert shard_files(str(shards / "shard-{000000..000002}.tar")) == three
    assert shard_files(three[1]) == [three[1]]
    assert shard_files(shards) == three
    assert shard_files(folder) is None  # images (in subfolders): a folder of images
    (folder / "backup.tar").write_bytes(b"")
    assert shard_files(folder) is None  # a .tar beside subfolders of images is not a shard


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("shard-{000000..000004}.tar", "2 of the 5 shards"),
        ("train.tar.gz", "compressed tars cannot be read by index"),
    ],
)
def test_missing_shards_and_compressed_tars_are_one_line(shards, spec, words):
    with pytest.raises(DataError) as error:
        shard_files(str(shards / spec))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_data_shards_command_refuses_a_used_folder_and_leaves_no_partial(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "shards", "--data", str(folder), "--out", str(out),
                 "--shard-size", "6"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "10 images in 2 shards" in said and "shard-{000000..000001}.tar" in said
    before = sorted(p.name for p in out.iterdir())
    code = main(["data", "shards", "--data", str(folder), "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2 and "not an empty folder" in error and error.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no .partial


def test_an_interrupted_write_leaves_nothing(folder, tmp_path, monkeypatch):
    import webdataset

    calls = []

    def write(self, sample):
        calls.append(sample["__key__"])
        if len(calls) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(webdataset.ShardWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        write_shards(folder, tmp_path / "out", shard_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


# --- training on shards -------------------------------------------------------------------------


def _losses(run) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:skipping unreadable image")  # the broken file, both ways
@pytest.mark.parametrize("name", METHODS.names())
def test_a_step_on_shards_equals_the_step_on_their_folder(name, folder, shards, tmp_path):
    runs, losses = {}, {}
    for kind, data in (("folder", folder), ("shards", shards)):
        runs[kind] = tmp_path / f"run_{kind}"
        cfg = tiny_config(name, runs[kind], **{"data.path": str(data)})
        losses[kind] = engine_steps(cfg, 1).losses
    assert losses["shards"] == losses["folder"]
    if METHODS.get(name).needs_proposals:  # keyed by member name, the folder's boxes for each
        from densessl.data.proposal_store import load_proposals

        (cached,) = runs["shards"].glob("proposals_*.npz")
        by_member = load_proposals(cached)
        by_path = load_proposals(folder / ".densessl_proposals.npz")
        assert sorted(by_member) == sorted(TarShards([*sorted(shards.glob("*.tar"))]).keys[1:])
        for path, boxes in by_path.items():
            key = sample_keys([path])[0] + "." + path.rsplit(".", 1)[1]
            np.testing.assert_array_equal(by_member[key], boxes)


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_an_interrupted_shard_run_resumes_to_the_straight_run(shards, tmp_path, monkeypatch):
    config = dict(steps=4, checkpoint_every=2, **{"data.path": str(shards)})
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config("selfpatch", straight, **config))
    real, calls = engine_step.augment_batch, []

    def augment(batch):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(batch)

    with monkeypatch.context() as patch:
        patch.setattr(engine_step, "augment_batch", augment)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config("selfpatch", split, **config))
    assert [step for step, _ in _losses(split)] == [1, 2, 3]
    train(tiny_config("selfpatch", split, **config), resume=True)
    assert _losses(split) == _losses(straight)
