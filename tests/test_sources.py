"""Each source's real download-from-local-archive, extract, prepare and split code, on miniature
archives in the official layouts; and every bad input refused with a clear error."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

import miniatures as mini
from pipeline import download, prepare, params
from pipeline.sources import cifar
from pipeline.stage import PipelineError


def dataset(source: dict, **options) -> dict:
    """A data set entry, checked against the schema's $defs/dataset like params.yaml would be."""
    cfg = {"source": source, "val_fraction": 0.2, "split_seed": 0, **options}
    schema = params.load_schema()
    jsonschema.validate(cfg, {"$defs": schema["$defs"], "$ref": "#/$defs/dataset"})
    return cfg


def fetch_and_prepare(cfg: dict, tmp: Path, workers: int = 2) -> tuple[Path, dict]:
    download.download(cfg["source"], tmp / "raw")
    meta = prepare.prepare(cfg, tmp / "raw", tmp / "prepared", workers=workers)
    assert meta == json.loads((tmp / "prepared" / "meta.json").read_text())
    return tmp / "prepared", meta


def load(prepared: Path, split: str, name: str = "labels") -> np.ndarray:
    return np.load(prepared / f"{split}_{name}.npy")


def class_of(images: np.ndarray, n_classes: int) -> np.ndarray:
    """The class each image's centre colour encodes (nearest palette colour)."""
    h, w = images.shape[1:3]
    centre = images[:, h // 2, w // 2, :3].astype(int)                        # (N, 3)
    palette = np.array([mini.colour(c) for c in range(n_classes)])            # (K, 3)
    return np.abs(centre[:, None, :] - palette[None]).sum(-1).argmin(1)


def test_published_archives_are_torchvisions():
    from torchvision.datasets import CIFAR10, CIFAR100
    for kind, tv in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        a = cifar.ARCHIVES[kind]
        assert (a.url, a.filename, a.md5) == (tv.url, tv.filename, tv.tgz_md5)


def test_cifar10_miniature(tmp_path):
    archive = mini.cifar10(tmp_path)   # 10 classes x 6 train, x 2 test
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["classes"] == [f"class{c}" for c in range(10)]
    assert meta["counts"] == {"train": 48, "val": 12, "test": 20}
    assert meta["image_size"] == [32, 32] and meta["channels"] == 3
    for split in ("train", "val", "test"):
        images, labels = load(prepared, split, "images"), load(prepared, split)
        assert images.shape == (meta["counts"][split], 32, 32, 3) and images.dtype == np.uint8
        assert (class_of(images, 10) == labels).all()                  # pixels and labels travelled together
    assert sorted(np.bincount(load(prepared, "val"), minlength=10)) == [1] * 8 + [2] * 2   # stratified
    assert np.bincount(load(prepared, "test")).tolist() == [2] * 10                   # official test kept
    # train + val are exactly the 60 official training images (pixel (0,0) R tells them apart per batch)
    assert len(load(prepared, "train")) + len(load(prepared, "val")) == 60


def test_cifar100_keeps_coarse_labels(tmp_path):
    archive = mini.cifar100(tmp_path)  # 100 classes x 5 train, x 1 test
    cfg = dataset({"kind": "cifar100", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["classes"] == [f"fine{c}" for c in range(100)]
    assert meta["coarse_classes"] == [f"coarse{c}" for c in range(20)]
    assert meta["counts"] == {"train": 400, "val": 100, "test": 100}
    assert np.bincount(load(prepared, "val"), minlength=100).tolist() == [1] * 100      # stratified
    for split in ("train", "val", "test"):
        fine, coarse = load(prepared, split), load(prepared, split, "coarse_labels")
        assert (coarse == fine // 5).all() and (class_of(load(prepared, split, "images"), 100) == fine).all()


def test_cifar_pickles_are_checked_before_unpickling(tmp_path):
    archive = mini.cifar10(tmp_path)
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    download.download(cfg["source"], tmp_path / "raw")
    marker = tmp_path / "pwned"

    class Evil:   # unpickling this would create `marker`
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (tmp_path / "raw/cifar-10-batches-py/data_batch_3").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(PipelineError, match="data_batch_3 does not match its checksum"):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    assert not marker.exists() and not (tmp_path / "prepared").exists()


def test_a_hostile_pickle_in_a_mirror_archive_never_runs(tmp_path):
    """The mirror override pins the user's own md5, so the checksum passes: the restricted
    unpickler is what stops `data_batch_1`'s __reduce__ from calling os.system."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    archive = mini.cifar10(tmp_path, replace={"data_batch_1": pickle.dumps(Evil(), protocol=2)})
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    download.download(cfg["source"], tmp_path / "raw")
    with pytest.raises(PipelineError, match=r"data_batch_1 is not a CIFAR pickle .*(posix|os)\.system"):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    assert not marker.exists() and not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("damage, why", [
    (lambda b: {**b, "data": b["data"].astype(np.int16)}, "'data' is not uint8 rows"),
    (lambda b: {**b, "labels": b["labels"][:-1]}, "'labels' is not 12 labels in"),
    (lambda b: {**b, "labels": [10] + b["labels"][1:]}, r"'labels' is not 12 labels in \[0, 10\)"),
    (lambda b: [b], "holds a list, not a CIFAR dict")])
def test_a_cifar_batch_of_the_wrong_layout_is_refused(tmp_path, damage, why):
    batch = pickle.loads(mini.cifar10_members()["cifar-10-batches-py/data_batch_2"])
    archive = mini.cifar10(tmp_path, replace={"data_batch_2": pickle.dumps(damage(batch))})
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    download.download(cfg["source"], tmp_path / "raw")
    with pytest.raises(PipelineError, match=why):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")


def test_tiny_imagenet_miniature(tmp_path):
    archive = mini.tiny_imagenet(tmp_path)   # 3 classes x 4 train; val/ 2 per class is our test
    cfg = dataset({"kind": "tiny_imagenet", "archive_dir": str(tmp_path), "md5": mini.md5(archive)},
                  image_size=16, val_fraction=0.25)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["archive.json"]      # zip read in place
    assert meta["class_ids"] == mini.TINY_WNIDS                                  # sorted wnids
    assert meta["classes"] == [mini.TINY_WORDS[w] for w in mini.TINY_WNIDS]      # names from words.txt
    assert meta["counts"] == {"train": 9, "val": 3, "test": 6}
    assert load(prepared, "test").tolist() == [0, 1, 2, 0, 1, 2]                 # val_annotations.txt order
    for split in ("train", "val", "test"):
        images = load(prepared, split, "images")
        assert images.shape[1:] == (16, 16, 3)
        assert (class_of(images, 3) == load(prepared, split)).all()


def test_a_tiny_imagenet_zip_changed_after_download_is_damaged_not_a_new_checksum(tmp_path):
    archive = mini.tiny_imagenet(tmp_path)
    cfg = dataset({"kind": "tiny_imagenet", "archive_dir": str(tmp_path), "md5": mini.md5(archive)},
                  image_size=16, val_fraction=0.25)
    download.download(cfg["source"], tmp_path / "raw")
    with open(archive, "ab") as f:
        f.write(b"changed")
    with pytest.raises(PipelineError, match=r"wrong checksum: .*delete it and fetch it again \(the published") as e:
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    assert "set source.md5" not in str(e.value) and not (tmp_path / "prepared").exists()


def test_cub200_miniature_with_train_per_class(tmp_path):
    archive = mini.cub200(tmp_path)   # 3 species x 10 train, x 2 test; 48x32 photos
    cfg = dataset({"kind": "cub200", "archive_dir": str(tmp_path), "md5": mini.md5(archive)},
                  image_size=16, train_per_class=5, val_fraction=0.2)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["images.tar"]        # one file, not 36
    assert meta["classes"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert meta["counts"] == {"train": 15, "val": 6, "test": 6}
    assert np.bincount(load(prepared, "train")).tolist() == [5, 5, 5]
    assert np.bincount(load(prepared, "val")).tolist() == [2, 2, 2]
    for split in ("train", "val", "test"):
        images = load(prepared, split, "images")
        assert images.shape[1:] == (16, 16, 3)
        # short side to 16, centre-cropped: the black side bars are cut off entirely
        assert images[:, :, [0, -1]].astype(int).sum(-1).min() > 30
        assert (class_of(images, 3) == load(prepared, split)).all()


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_directory_of_mixed_formats(tmp_path, channels):
    classes = {"cat": 6, "dog": 6, "emu": 6}
    folder = mini.image_folder(tmp_path / "photos", classes)    # class folders only: test is carved
    cfg = dataset({"kind": "folder", "path": str(folder)}, image_size=8, channels=channels,
                  test_fraction=1 / 3, val_fraction=0.25)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["classes"] == ["cat", "dog", "emu"] and meta["channels"] == channels
    assert meta["counts"] == {"train": 9, "val": 3, "test": 6}
    for split in ("train", "val", "test"):
        images, labels = load(prepared, split, "images"), load(prepared, split)
        assert images.shape[1:] == (8, 8, channels)
        assert np.bincount(labels).tolist() == [meta["counts"][split] // 3] * 3
        if channels == 3:   # RGBA, grayscale, palette and BMP all converted to RGB
            grey = [i for i in range(len(images)) if (images[i, 4, 4].max() - images[i, 4, 4].min()) < 3]
            colour = [i for i in range(len(images)) if i not in grey]
            assert (class_of(images[colour], 3) == labels[colour]).all() and colour


def test_exif_rotation_transparency_and_tiny_images_are_handled_and_counted(tmp_path):
    from PIL import Image
    upright = Image.new("RGB", (8, 16), (255, 0, 0))                 # a portrait photo: red top,
    upright.paste((0, 0, 255), (0, 8, 8, 16))                         # blue bottom
    stored = upright.transpose(Image.Transpose.ROTATE_90)             # as the sensor stored it
    exif = Image.Exif()
    exif[0x0112] = 6                                                  # "rotate 90 CW to display"
    for c in ("a", "b"):
        d = tmp_path / "photos" / "train" / c
        d.mkdir(parents=True)
        for i in range(4):
            (d / f"{i}.png").write_bytes(mini.image_bytes(0 if c == "a" else 1, (8, 8), "PNG"))
        (tmp_path / "photos" / "test" / c).mkdir(parents=True)
    stored.save(tmp_path / "photos/test/a/phone.jpg", exif=exif, quality=95)
    see_through = Image.new("RGBA", (8, 8), (0, 200, 0, 255))
    see_through.putpixel((0, 0), (0, 200, 0, 0))
    see_through.save(tmp_path / "photos/test/b/logo.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "photos/test/b/dot.png")
    cfg = dataset({"kind": "folder", "path": str(tmp_path / "photos")}, image_size=8, val_fraction=0.25)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["image_notes"] == {"exif_rotated": 1, "transparent": 1, "upscaled": 1}
    test, labels = load(prepared, "test", "images").astype(int), load(prepared, "test")
    phone = test[np.flatnonzero(labels == 0)[0]]                      # short side 8, centre square
    assert (phone[:3, :, 0] > 200).all() and (phone[:3, :, 2] < 60).all()     # red on top: upright
    assert (phone[-3:, :, 2] > 200).all() and (phone[-3:, :, 0] < 60).all()   # blue below


@pytest.mark.parametrize("arcname", ["mine", "."])    # wrapped in mine/, or ./train/... (tar -C src .)
def test_image_folder_archive_with_train_and_test(tmp_path, arcname):
    folder = mini.image_folder(tmp_path / "src", {"a": 4, "b": 4}, split_dirs=True)
    archive = mini.tar_of_folder(folder, tmp_path / "mine.tar.gz", arcname=arcname)
    cfg = dataset({"kind": "folder", "path": str(archive), "md5": mini.md5(archive)},
                  image_size=10, val_fraction=0.25)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["classes"] == ["a", "b"]
    assert meta["counts"] == {"train": 6, "val": 2, "test": 2}     # test/ has 1 image per class


def test_image_folder_zip_is_read_in_place_and_pinned(tmp_path):
    members = {f"set/{split}/{c}/{i}.png": mini.image_bytes(k, fmt="PNG")
               for split, n in (("train", 5), ("test", 2)) for k, c in enumerate(["x", "y"]) for i in range(n)}
    members["__MACOSX/set/train/x/._0.png"] = b"mac metadata"             # not an image, not a class
    archive = mini.write_zip(tmp_path / "set.zip", members)
    cfg = dataset({"kind": "folder", "path": str(archive)}, image_size=4, val_fraction=0.2)
    prepared, meta = fetch_and_prepare(cfg, tmp_path)
    assert meta["classes"] == ["x", "y"] and meta["counts"] == {"train": 8, "val": 2, "test": 4}
    assert (class_of(load(prepared, "test", "images"), 2) == load(prepared, "test")).all()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["folder.json"]   # nothing copied
    mini.write_zip(archive, {**members, "set/train/x/extra.png": mini.image_bytes(0, fmt="PNG")})
    with pytest.raises(PipelineError, match="changed since the download stage"):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "again")


# ---- bad input ----

def test_wrong_checksum_is_an_error_naming_the_override_only_for_your_own_file(tmp_path):
    archive = mini.cifar10(tmp_path)   # not the published bytes
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path)})
    with pytest.raises(PipelineError, match=r"wrong checksum.*expected c58f30108f718f92721af3b95e74349a") as e:
        download.download(cfg["source"], tmp_path / "raw")
    assert "source.md5" not in str(e.value)   # the publisher's checksum is never to be replaced
    assert not (tmp_path / "raw").exists()
    mirror = dataset({"kind": "cifar10", "archive_dir": str(tmp_path), "md5": "0" * 32})
    with pytest.raises(PipelineError, match=rf"set source\.md5: {mini.md5(archive)} in params\.yaml"):
        download.download(mirror["source"], tmp_path / "raw")


def test_a_text_file_as_a_folder_source_is_not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("cat, dog\n")
    with pytest.raises(PipelineError, match=r"^source.path '.*notes.txt': .* is not an archive .* nor a directory"):
        download.download({"kind": "folder", "path": str(tmp_path / "notes.txt")}, tmp_path / "raw")


def test_an_archive_dir_that_does_not_exist_is_an_error_not_created(tmp_path):
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path / "typo" / "dl")})
    with pytest.raises(PipelineError, match=r"source.archive_dir .*typo/dl is not a directory; create it"):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "typo").exists()


def test_a_downloads_variable_naming_no_folder_is_an_error_not_created(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DOWNLOADS", str(tmp_path / "typo" / "dl"))
    cfg = dataset({"kind": "cifar10"})
    with pytest.raises(PipelineError, match=r"^\$PIPELINE_DOWNLOADS '.*typo/dl': .*typo/dl is not a directory; "
                                            r"create it .* or unset PIPELINE_DOWNLOADS to use data/downloads/$"):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "raw").exists()
    (tmp_path / "typo" / "dl").mkdir(parents=True)                # there: looked in (the archive is missing)
    with pytest.raises(PipelineError, match=r"typo/dl/cifar-10-python.tar.gz"):
        download.download({**cfg["source"], "url": "http://127.0.0.1:9/cifar-10-python.tar.gz"}, tmp_path / "raw")


def test_missing_archive_and_no_network_says_where_to_put_it(tmp_path):
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"   # nothing listens on the discard port
    (tmp_path / "dl").mkdir()
    cfg = dataset({"kind": "cifar10", "archive_dir": str(tmp_path / "dl"), "url": url})
    with pytest.raises(PipelineError) as e:
        download.download(cfg["source"], tmp_path / "raw")
    msg = str(e.value)
    for part in (url, "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 str((tmp_path / "dl" / "cifar-10-python.tar.gz").resolve()), "PIPELINE_DOWNLOADS"):
        assert part in msg
    assert list((tmp_path / "dl").iterdir()) == [] and not (tmp_path / "raw").exists()


def test_downloads_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    archive = mini.cifar10(tmp_path / "elsewhere")
    monkeypatch.setenv("PIPELINE_DOWNLOADS", str(tmp_path / "elsewhere"))
    download.download({"kind": "cifar10", "md5": mini.md5(archive)}, tmp_path / "raw")
    assert (tmp_path / "raw/cifar-10-batches-py/test_batch").is_file()


def test_archive_left_in_raw_folder_is_moved_not_deleted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw/c10").mkdir(parents=True)
    archive = mini.cifar10(tmp_path / "data/raw/c10")
    digest = mini.md5(archive)
    source = {"kind": "cifar10", "md5": digest}
    download.rescue_archive(source, Path("data/raw/c10"))
    kept = tmp_path / "data/downloads/cifar-10-python.tar.gz"
    assert kept.is_file() and mini.md5(kept) == digest and not archive.exists()
    download.download(source, Path("data/raw/c10"))                 # now rebuilt from the kept copy
    assert kept.is_file() and (tmp_path / "data/raw/c10/cifar-10-batches-py").is_dir()


def test_truncated_archive_is_refused(tmp_path):
    folder = mini.image_folder(tmp_path / "src", {"a": 3, "b": 3})
    archive = mini.tar_of_folder(folder, tmp_path / "x.tar.gz", "x")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(PipelineError, match="corrupt or truncated archive"):
        download.download({"kind": "folder", "path": str(archive)}, tmp_path / "raw")
    zipped = mini.write_zip(tmp_path / "x.zip", {"a/1.png": mini.image_bytes(0, fmt="PNG")})
    zipped.write_bytes(zipped.read_bytes()[:-30])
    with pytest.raises(PipelineError, match="corrupt or truncated archive"):
        download.download({"kind": "folder", "path": str(zipped)}, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def _damage_header(archive: Path, member: int) -> Path:
    """The same .tar.gz with one byte of the `member`-th tar header flipped (a valid gzip stream)."""
    with tarfile.open(archive) as tar:
        offset = tar.getmembers()[member].offset
    data = bytearray(gzip.decompress(archive.read_bytes()))
    data[offset + 10] ^= 0xFF                        # inside the member's name: its checksum fails
    archive.write_bytes(gzip.compress(bytes(data)))
    return archive


def test_a_damaged_tar_header_after_the_first_member_is_refused_not_taken_as_the_end(tmp_path):
    """The case from issue 26: tarfile alone stops at the bad header and keeps 4 of 10 classes."""
    folder = mini.image_folder(tmp_path / "src", {f"c{i}": 20 for i in range(10)})
    archive = _damage_header(mini.tar_of_folder(folder, tmp_path / "x.tar.gz", "x"), member=80)
    with tarfile.open(archive) as tar:
        assert len(tar.getmembers()) == 80            # what was silently kept before
    with pytest.raises(PipelineError, match=r"corrupt or truncated archive .*damaged tar header"):
        download.download({"kind": "folder", "path": str(archive)}, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_the_download_stage_refuses_a_damaged_header_in_one_line(tmp_path):
    """The stage's command line, as both tools run it: exit 1, one line, no raw folder."""
    from conftest import ROOT, run
    folder = mini.image_folder(tmp_path / "src", {"a": 6, "b": 6, "c": 6})
    archive = _damage_header(mini.tar_of_folder(folder, tmp_path / "x.tar.gz", "x"), member=10)
    (tmp_path / "source.json").write_text(json.dumps({"kind": "folder", "path": str(archive)}))
    r = run([sys.executable, "-m", "pipeline.download", "--config", str(tmp_path / "source.json"),
             "--source", str(archive), "--out", str(tmp_path / "raw")], ROOT, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: corrupt or truncated archive {archive} (ReadError: damaged tar header (bad checksum): the archive "
        f"is cut or corrupt there); delete it and fetch it again")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("where", ["gzip CRC-32", "compressed data"])
def test_a_flipped_byte_in_a_tar_gz_is_refused(tmp_path, where):
    folder = mini.image_folder(tmp_path / "src", {"a": 6, "b": 6})
    archive = mini.tar_of_folder(folder, tmp_path / "x.tar.gz", "x")
    data = bytearray(archive.read_bytes())
    data[-8 if where == "gzip CRC-32" else len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="corrupt or truncated archive"):
        download.download({"kind": "folder", "path": str(archive)}, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_cub_archive_pinned_by_md5_but_damaged_is_refused(tmp_path):
    """The md5 matches (the user pinned the damaged file's own), so only reading it whole shows
    that half the members are missing."""
    archive = _damage_header(mini.cub200(tmp_path), member=20)
    cfg = dataset({"kind": "cub200", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    with pytest.raises(PipelineError, match="damaged tar header"):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_cub_archive_missing_a_listed_image_is_refused(tmp_path):
    archive = mini.cub200(tmp_path)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    dropped = next(n for n in members if n.endswith(".jpg"))
    del members[dropped]
    mini.write_tar(archive, members)
    cfg = dataset({"kind": "cub200", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    with pytest.raises(PipelineError, match=r"lacks 1 listed image\(s\), e\.g\. .*" + dropped.split("/")[-1]):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("dropped", [f"train/{mini.TINY_WNIDS[1]}/images/{mini.TINY_WNIDS[1]}_2.JPEG",
                                     "val/images/val_3.JPEG"])
def test_a_tiny_imagenet_zip_missing_a_listed_image_is_refused(tmp_path, dropped):
    """Listed in the class's _boxes.txt or in val_annotations.txt, but not in the (pinned) zip."""
    archive = mini.tiny_imagenet(tmp_path)
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    del members[f"tiny-imagenet-200/{dropped}"]
    mini.write_zip(archive, members)
    cfg = dataset({"kind": "tiny_imagenet", "archive_dir": str(tmp_path), "md5": mini.md5(archive)})
    with pytest.raises(PipelineError, match=r"lacks 1 listed image\(s\), e\.g\. .*" + dropped.split("/")[-1]):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def _tar_with(path: Path, info: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("a/ok.png")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name,linkname,kind", [
    ("../escape.png", "", tarfile.REGTYPE),
    ("/tmp/absolute-escape.png", "", tarfile.REGTYPE),
    ("a/link", "/etc/passwd", tarfile.SYMTYPE),
    ("a/hard", "../../outside", tarfile.LNKTYPE),
])
def test_unsafe_tar_members_are_refused(tmp_path, name, linkname, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    archive = _tar_with(tmp_path / "evil.tar", info)
    with pytest.raises(PipelineError, match="unsafe archive"):
        download.download({"kind": "folder", "path": str(archive)}, tmp_path / "sub" / "raw")
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "sub" / "raw").exists()
    assert list((tmp_path / "sub").iterdir()) == []                  # no half-extracted temp dir left


@pytest.mark.parametrize("name", ["../escape.png", "/abs.png", "a/../../escape.png"])
def test_unsafe_zip_names_are_refused(tmp_path, name):
    archive = mini.write_zip(tmp_path / "evil.zip", {"a/ok.png": b"x", name: b"x"})
    with pytest.raises(PipelineError, match="unsafe archive"):
        download.download({"kind": "folder", "path": str(archive)}, tmp_path / "sub" / "raw")
    assert not (tmp_path / "escape.png").exists() and list((tmp_path / "sub").iterdir()) == []


def _folder_cfg(path: Path, **options) -> dict:
    return dataset({"kind": "folder", "path": str(path)}, image_size=8, test_fraction=0.25, **options)


@pytest.mark.parametrize("case,message", [
    ("empty_class", r"class folder emu/ \(in .*photos\) holds no images"),
    ("one_class", "found 1 class folder"),
    ("missing_in_test", r"missing from test/: emu"),
    ("no_test_dir", "has train/ but no test/"),
])
def test_bad_image_folders(tmp_path, case, message):
    split = case in ("missing_in_test", "no_test_dir")
    root = mini.image_folder(tmp_path / "photos", {"cat": 4, "dog": 4, "emu": 4}, split_dirs=split)
    if case == "empty_class":
        for f in (root / "emu").iterdir():
            f.unlink()
    elif case == "one_class":
        for name in ("dog", "emu"):
            for f in (root / name).iterdir():
                f.unlink()
            (root / name).rmdir()
    elif case == "missing_in_test":
        for f in (root / "test/emu").iterdir():
            f.unlink()
        (root / "test/emu").rmdir()
    else:
        for f in (root / "test").rglob("*.*"):
            f.unlink()
        for d in sorted((root / "test").iterdir()):
            d.rmdir()
        (root / "test").rmdir()
    cfg = _folder_cfg(root)
    download.download(cfg["source"], tmp_path / "raw")
    with pytest.raises(PipelineError, match=message):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("link", ["a class folder", "an image"])
def test_links_in_an_image_folder_are_refused_as_in_an_archive(tmp_path, link):
    """A class folder linked out of the source said only "holds no images", while a linked image
    was followed: both are now refused by name, before anything is recorded."""
    root = mini.image_folder(tmp_path / "photos", {"cat": 4, "dog": 4})
    elsewhere = mini.image_folder(tmp_path / "elsewhere", {"emu": 4})
    name = root / "emu" if link == "a class folder" else root / "dog" / "emu.png"
    name.symlink_to(elsewhere / "emu" if link == "a class folder" else elsewhere / "emu" / "000.png")
    cfg = _folder_cfg(root)
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(name))} is a symbolic link \(to {tmp_path}/elsewhere/"
                                            rf"emu.*\): image folders, like archives, take no links; copy the files in"):
        download.download(cfg["source"], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_unreadable_images_fail_by_name_or_are_skipped_and_counted(tmp_path):
    root = mini.image_folder(tmp_path / "photos", {"cat": 8, "dog": 8})
    (root / "cat" / "broken.jpg").write_bytes(mini.image_bytes(0)[:40])        # truncated JPEG
    (root / "dog" / "notes.txt").write_text("not an image")
    cfg = _folder_cfg(root)
    download.download(cfg["source"], tmp_path / "raw")
    with pytest.raises(PipelineError, match=r"unreadable image file.*(broken\.jpg|notes\.txt).*skip_unreadable"):
        prepare.prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp output left

    meta = prepare.prepare(_folder_cfg(root, skip_unreadable=True), tmp_path / "raw", tmp_path / "prepared")
    skipped = [why for whys in meta["skipped"].values() for why in whys]
    assert len(skipped) == 2 and any("broken.jpg" in s for s in skipped) and any("notes.txt" in s for s in skipped)
    assert any(s.endswith("notes.txt: not an image Pillow can read") for s in skipped)
    assert not any("BytesIO" in s or " object at 0x" in s for s in skipped), skipped
    assert sum(meta["counts"].values()) == 16
    for split, n in meta["counts"].items():
        assert load(tmp_path / "prepared", split, "images").shape == (n, 8, 8, 3)
        assert len(load(tmp_path / "prepared", split)) == n


def test_cli_error_is_one_line_and_leaves_nothing(project):
    from conftest import run
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["datasets"]["mine"] = {"source": {"kind": "folder", "path": "no/such/folder"}, "image_size": 8,
                             "val_fraction": 0.2, "split_seed": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    r = run(["python", "-m", "pipeline.configure", "--params", "params.yaml", "--out", "results/configs",
             "--sources", "data/sources"], project, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: datasets.mine.source.path: no/such/folder does "
                                                        "not exist")
    assert not (project / "results/configs").exists()
    assert not (project / "data/sources/mine").exists()    # no link made
    (project / "mine.source.json").write_text(json.dumps(p["datasets"]["mine"]["source"]))
    r = run(["python", "-m", "pipeline.download", "--config", "mine.source.json", "--source", "data/sources/mine",
             "--out", "data/raw/mine"], project, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: data/sources/mine: missing or a broken link")
    assert not (project / "data/raw/mine").exists()


def test_every_source_kind_is_in_the_schema_and_nothing_else():
    """The schema's enum of source kinds and the code's table cannot drift apart."""
    from pipeline import sources
    source = params.load_schema()["$defs"]["source"]
    assert set(source["properties"]["kind"]["enum"]) == set(sources.KINDS)
