"""Stage prepare: decode a data set once into the prepared form every later stage reads.

    python -m pipeline.prepare --params params.yaml --dataset digits \
        --raw data/raw/digits --out data/prepared/digits

The prepared form, the same for every data set (small ones can then live wholly on the GPU):
    {train,val,test}_images.npy   uint8 (N, H, W, C), memory-mappable
    {train,val,test}_labels.npy   int64 (N,)
    meta.json                     classes, image shape, split sizes, source
The official test split stays the test split (or a seeded stratified test_fraction is carved out
when the source has none); val is a seeded stratified val_fraction of the training split.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import params as params_mod
from pipeline import sources, stage

log = logging.getLogger("pipeline.prepare")
SPLITS = ("train", "val", "test")
CHUNK = 1024  # images decoded and written per step: bounds memory whatever the data set's size


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of positions 0..N-1 into (keep, held_out)."""
    from sklearn.model_selection import train_test_split  # imported here: keeps no-op runs fast
    idx = np.arange(len(labels))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as e:
        raise stage.PipelineError(
            f"cannot split {len(labels)} images of {len(np.unique(labels))} classes with fraction "
            f"{fraction}: {e}; change val_fraction/test_fraction in params.yaml") from None
    return np.sort(keep), np.sort(held)


def plan_splits(raw: sources.Raw, cfg: dict) -> dict[str, tuple[sources.Items, np.ndarray]]:
    """For each split, the official Items it is drawn from and the positions taken."""
    train_pos = np.arange(len(raw.train))
    if raw.test is None:
        train_pos, test_pos = split_indices(raw.train.labels, cfg["test_fraction"], cfg["split_seed"])
        test = (raw.train, test_pos)
    else:
        test = (raw.test, np.arange(len(raw.test)))
    keep, held = split_indices(raw.train.labels[train_pos], cfg["val_fraction"], cfg["split_seed"])
    return {"train": (raw.train, train_pos[keep]), "val": (raw.train, train_pos[held]), "test": test}


def write_split(out: Path, split: str, items: sources.Items, positions: np.ndarray) -> None:
    images = np.lib.format.open_memmap(out / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(positions), *items.image_shape))
    for start in tqdm(range(0, len(positions), CHUNK), desc=f"prepare {split}", unit="chunk"):
        chunk = positions[start:start + CHUNK]
        images[start:start + len(chunk)] = items.load(chunk)
    images.flush()
    del images
    np.save(out / f"{split}_labels.npy", items.labels[positions].astype(np.int64))


def prepare(cfg: dict, raw_dir: Path, out: Path) -> dict:
    """Write the prepared form of one data set to `out`; return its meta."""
    raw = sources.read(cfg["source"], raw_dir)
    plan = plan_splits(raw, cfg)
    h, w, c = raw.train.image_shape
    meta = {"classes": raw.classes, "image_size": [h, w], "channels": c,
            "counts": {s: int(len(pos)) for s, (_, pos) in plan.items()},
            "source": cfg["source"]}
    with stage.atomic_path(out) as tmp:
        tmp.mkdir()
        for split, (items, positions) in plan.items():
            write_split(tmp, split, items, positions)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("prepared %s: %s", out, meta["counts"])
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--raw", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    cfg = params_mod.dataset_config(params_mod.load(args.params), args.dataset)
    stage.run_stage("prepare", cfg, [args.raw], [args.out], lambda: prepare(cfg, args.raw, args.out))


if __name__ == "__main__":
    stage.cli(main)
