"""Prepare: seeded stratified splits, per-class subsets, parallel streaming decode, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import miniatures as mini
from conftest import run
from pipeline import download, prepare
from pipeline.sources.base import ArrayLoader, Items, Raw
from pipeline.stage import PipelineError


def raw_of(labels: list[int], test: list[int] | None = None) -> Raw:
    """A Raw over in-memory images whose pixel value is the image's own index (tells images apart)."""
    def items(lbls):
        imgs = (np.arange(len(lbls)) % 256).astype(np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
        return Items(np.array(lbls, dtype=np.int64), ArrayLoader(imgs), (2, 2, 1))
    return Raw([f"c{i}" for i in range(max(labels) + 1)], items(labels), items(test) if test else None)


def cfg(**kw) -> dict:
    return {"source": {"kind": "sklearn_digits"}, "val_fraction": 0.2, "split_seed": 0, **kw}


def test_splits_are_stratified_seeded_and_disjoint():
    raw = raw_of([c for c in range(4) for _ in range(25)])       # 4 classes x 25
    plan = prepare.plan_splits(raw, cfg(test_fraction=0.2))
    pos = {s: p for s, (_, p) in plan.items()}
    assert [len(pos[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len(set(np.concatenate(list(pos.values())))) == 100                # disjoint, all used
    for s, n in (("train", 16), ("val", 4), ("test", 5)):
        assert np.bincount(raw.train.labels[pos[s]]).tolist() == [n] * 4      # stratified
    again = prepare.plan_splits(raw, cfg(test_fraction=0.2))
    other = prepare.plan_splits(raw, cfg(test_fraction=0.2, split_seed=1))
    assert (again["val"][1] == pos["val"]).all() and not np.array_equal(other["val"][1], pos["val"])


def test_official_test_split_is_kept_and_train_per_class_applies_after_val():
    raw = raw_of([c for c in range(3) for _ in range(10)], test=[0, 1, 2, 2])
    plan = prepare.plan_splits(raw, cfg(train_per_class=4, val_fraction=0.3))
    items, test_pos = plan["test"]
    assert items is raw.test and test_pos.tolist() == [0, 1, 2, 3]
    assert np.bincount(raw.train.labels[plan["val"][1]]).tolist() == [3, 3, 3]
    assert np.bincount(raw.train.labels[plan["train"][1]]).tolist() == [4, 4, 4]
    assert not set(plan["train"][1]) & set(plan["val"][1])


def test_seeds_splits_no_val_and_test_per_class(caplog):
    """val_fraction: 0 trains on the whole training split (seeds 002/003); test_per_class keeps a
    seeded, class-balanced part of the official test split (the birds course, Tiny ImageNet's 8,000)."""
    raw = raw_of([c for c in range(3) for _ in range(10)], test=[c for c in range(3) for _ in range(6)])
    plan = prepare.plan_splits(raw, cfg(val_fraction=0, test_per_class=4))
    assert len(plan["val"][1]) == 0 and plan["train"][1].tolist() == list(range(30))
    items, test_pos = plan["test"]
    assert items is raw.test and np.bincount(raw.test.labels[test_pos]).tolist() == [4, 4, 4]
    assert prepare.plan_splits(raw, cfg(val_fraction=0, test_per_class=4))["test"][1].tolist() == test_pos.tolist()
    assert prepare.plan_splits(raw, cfg(val_fraction=0, test_per_class=4, split_seed=1))["test"][1].tolist() \
        != test_pos.tolist()
    # a class with fewer test images keeps them all (it only sizes the test set), and says so
    short = raw_of([0] * 10 + [1] * 10, test=[0] * 3 + [1] * 8)
    with caplog.at_level("WARNING"):
        test_pos = prepare.plan_splits(short, cfg(val_fraction=0, test_per_class=5))["test"][1]
    assert np.bincount(short.test.labels[test_pos]).tolist() == [3, 5]
    assert "1 class(es) have fewer test images and keep them all: c0 (3)" in caplog.text


def test_missing_test_fraction_and_too_few_per_class_are_clear_errors():
    raw = raw_of([c for c in range(3) for _ in range(10)])
    with pytest.raises(PipelineError, match="no official test split: set test_fraction"):
        prepare.plan_splits(raw, cfg())
    with pytest.raises(PipelineError, match="train_per_class is 9 but class 'c0' has only"):
        prepare.plan_splits(raw_of([0] * 10 + [1] * 10, test=[0, 1]), cfg(train_per_class=9))


def test_parallel_streaming_equals_serial(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "MAX_CHUNK", 3)          # many small chunks, several in flight
    folder = mini.image_folder(tmp_path / "photos", {"a": 9, "b": 9, "c": 9})
    c = cfg(source={"kind": "folder", "path": str(folder)}, image_size=6, test_fraction=0.2)
    download.download(c["source"], tmp_path / "raw")
    one = prepare.prepare(c, tmp_path / "raw", tmp_path / "one", workers=1)
    two = prepare.prepare(c, tmp_path / "raw", tmp_path / "two", workers=2)
    assert one == two and sum(one["counts"].values()) == 27
    for f in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_cli_configure_download_prepare_stats(project, tmp_path):
    folder = mini.image_folder(tmp_path / "photos", {"cat": 5, "dog": 5}, split_dirs=True)
    archive = mini.tar_of_folder(folder, tmp_path / "photos.tar.gz", "photos")
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["datasets"]["pets"] = {"source": {"kind": "folder", "path": str(archive), "md5": mini.md5(archive)},
                             "image_size": 8, "channels": 1, "val_fraction": 0.2, "split_seed": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    stages = [["pipeline.configure", "--params", "params.yaml", "--out", "results/configs", "--sources", "data/sources"],
              ["pipeline.download", "--config", "results/configs/datasets/pets.source.json",
               "--source", "data/sources/pets", "--out", "data/raw/pets"],
              ["pipeline.prepare", "--config", "results/configs/datasets/pets.json", "--raw", "data/raw/pets",
               "--out", "data/prepared/pets"],
              ["pipeline.stats", "--prepared", "data/prepared/pets", "--out", "data/stats/pets.json"]]
    for args in stages:
        run(["python", "-m", *args], project)
    meta = json.loads((project / "data/prepared/pets/meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["counts"] == {"train": 8, "val": 2, "test": 2}
    train = np.load(project / "data/prepared/pets/train_images.npy")
    stats = json.loads((project / "data/stats/pets.json").read_text())
    assert train.shape == (8, 8, 8, 1) and stats["images"] == 8
    assert stats["mean"] == pytest.approx([train.mean() / 255], abs=1e-9)


def test_prepare_and_stats_without_a_val_split(tmp_path):
    folder = mini.image_folder(tmp_path / "photos", {"a": 6, "b": 6})
    c = cfg(source={"kind": "folder", "path": str(folder)}, image_size=4, test_fraction=0.5, val_fraction=0)
    download.download(c["source"], tmp_path / "raw")
    meta = prepare.prepare(c, tmp_path / "raw", tmp_path / "out", workers=1)
    assert meta["counts"] == {"train": 6, "val": 0, "test": 6}
    assert np.load(tmp_path / "out" / "val_images.npy").shape == (0, 4, 4, 3)
    from pipeline import stats
    assert len(stats.stats(tmp_path / "out", tmp_path / "stats.json")["mean"]) == 3
