"""Stage stats: per-channel mean and std of the training split, in [0, 1] pixel units.

    python -m pipeline.stats --prepared data/prepared/digits --out data/stats/digits.json

Accumulated in float64 over chunks of the memory-mapped images, so memory stays bounded.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import stage

log = logging.getLogger("pipeline.stats")
CHUNK_VALUES = 1 << 22   # pixel values per step (32 MB as float64), whatever the image size


def channel_stats(images: np.ndarray) -> dict:
    """images: (N, H, W, C) uint8. Returns mean and (population) std per channel in [0, 1] units."""
    n, c = images.shape[0], images.shape[-1]
    step = max(1, CHUNK_VALUES // int(np.prod(images.shape[1:])))
    total, total_sq = np.zeros(c), np.zeros(c)
    for start in tqdm(range(0, n, step), desc="stats", unit="chunk", mininterval=2):
        x = images[start:start + step].reshape(-1, c).astype(np.float64) / 255.0   # (pixels, C)
        total += x.sum(axis=0)
        total_sq += np.einsum("pc,pc->c", x, x)    # sum of squares without a squared copy
    count = n * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "images": int(n)}


def stats(prepared: Path, out: Path) -> dict:
    result = channel_stats(np.load(prepared / "train_images.npy", mmap_mode="r"))
    with stage.atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    log.info("stats of %s: mean %s std %s", prepared, result["mean"], result["std"])
    return result


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "stats", "datasets", deps={"prepared": "data/prepared/{ds}"}, outs={"out": stage.Out("data/stats/{ds}.json")})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    stats(args.prepared, args.out)


if __name__ == "__main__":
    stage.cli(main)
