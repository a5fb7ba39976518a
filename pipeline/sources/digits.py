"""scikit-learn's digits: 1,797 real 8x8 grayscale scans, shipped inside scikit-learn (offline)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.sources.base import Raw, array_items

ARCHIVE = None   # nothing to download


def fetch(source: dict, raw_dir: Path) -> None:
    """Export the copy shipped inside scikit-learn (no network) as plain, byte-stable files."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    # 0..16 intensities -> 0..255 so every prepared data set is plain uint8 pixels
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    np.save(raw_dir / "images.npy", images)
    np.save(raw_dir / "labels.npy", digits.target.astype(np.int64))
    (raw_dir / "classes.json").write_text(json.dumps([str(c) for c in digits.target_names]))


def read(cfg: dict, raw_dir: Path) -> Raw:
    images, labels = np.load(raw_dir / "images.npy"), np.load(raw_dir / "labels.npy")
    classes = json.loads((raw_dir / "classes.json").read_text())
    return Raw(classes=classes, train=array_items(images, labels, cfg), test=None)
