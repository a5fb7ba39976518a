"""Stats: per-channel mean/std of the training split, checked against numpy on the whole array."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import stats


@pytest.mark.parametrize("channels", [3, 1])
def test_channel_stats_match_numpy_across_chunks(monkeypatch, channels):
    monkeypatch.setattr(stats, "CHUNK_VALUES", 5 * 7 * channels * 4)   # 4 images per chunk; 37 is not a multiple
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 5, 7, channels), dtype=np.uint8)
    images[..., 0] //= 2                                               # channels differ
    result = stats.channel_stats(images)
    x = images.astype(np.float64) / 255
    assert result["images"] == 37
    assert result["mean"] == pytest.approx(x.mean(axis=(0, 1, 2)).tolist(), abs=1e-12)
    assert result["std"] == pytest.approx(x.std(axis=(0, 1, 2)).tolist(), abs=1e-12)


def test_stats_of_prepared_training_split_only(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    black_white = np.zeros((4, 2, 2, 3), np.uint8)
    black_white[:2] = 255                                               # half white: mean 0.5, std 0.5
    np.save(prepared / "train_images.npy", black_white)
    np.save(prepared / "test_images.npy", np.full((3, 2, 2, 3), 7, np.uint8))   # must not count
    result = stats.stats(prepared, tmp_path / "stats.json")
    assert json.loads((tmp_path / "stats.json").read_text()) == result
    assert result["mean"] == pytest.approx([0.5] * 3) and result["std"] == pytest.approx([0.5] * 3)
