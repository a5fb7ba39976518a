"""Data sources: how each kind of data set is fetched and read, before any splitting.

A source has two halves, one per stage:
  fetch(source_cfg, raw_dir)  download stage: put the raw archive(s) into raw_dir, verified
  read(source_cfg, raw_dir)   prepare stage: a Raw with class names and lazily loaded splits
Prepare turns every Raw into the same on-disk form, so training never knows the source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np


@dataclass
class Items:
    """One official split: labels up front, pixels loaded on demand in batches."""
    labels: np.ndarray                              # (N,) int64
    load: Callable[[np.ndarray], np.ndarray]        # indices (B,) -> images (B, H, W, C) uint8
    image_shape: tuple[int, int, int]               # (H, W, C) of every loaded image

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Raw:
    classes: list[str]
    train: Items
    test: Optional[Items]      # None: the source has no official test split; prepare carves one


@dataclass
class ArrayLoader:
    """Loads batches from an in-memory array (picklable, unlike a lambda)."""
    images: np.ndarray

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]


# ---- scikit-learn's digits: 1,797 real 8x8 grayscale scans, shipped inside scikit-learn ----

def fetch_sklearn_digits(cfg: dict, raw_dir: Path) -> None:
    """Export the copy shipped inside scikit-learn (no network) as plain, byte-stable files."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    # 0..16 intensities -> 0..255 so every prepared data set is plain uint8 pixels
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    np.save(raw_dir / "images.npy", images)
    np.save(raw_dir / "labels.npy", digits.target.astype(np.int64))
    (raw_dir / "classes.json").write_text(json.dumps([str(c) for c in digits.target_names]))


def read_sklearn_digits(cfg: dict, raw_dir: Path) -> Raw:
    images, labels = np.load(raw_dir / "images.npy"), np.load(raw_dir / "labels.npy")
    classes = json.loads((raw_dir / "classes.json").read_text())
    return Raw(classes=classes, train=Items(labels, ArrayLoader(images), images.shape[1:]), test=None)


SOURCES: dict[str, tuple[Callable, Callable]] = {
    "sklearn_digits": (fetch_sklearn_digits, read_sklearn_digits),
}


def fetch(cfg: dict, raw_dir: Path) -> None:
    SOURCES[cfg["kind"]][0](cfg, raw_dir)


def read(cfg: dict, raw_dir: Path) -> Raw:
    return SOURCES[cfg["kind"]][1](cfg, raw_dir)
