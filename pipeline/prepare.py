"""Stage prepare: decode a data set once into the prepared form every later stage reads.

    python -m pipeline.prepare --config results/configs/datasets/digits.json \
        --raw data/raw/digits --out data/prepared/digits [--workers N]

--config is the data set's entry in params.yaml, as the configure stage writes it.

The prepared form, the same for every data set (small ones can then live wholly on the GPU):
    {train,val,test}_images.npy   uint8 (N, H, W, C), memory-mappable
    {train,val,test}_labels.npy   int64 (N,)   (+ {split}_<name>_labels.npy for extra label sets)
    meta.json                     classes, image shape, split sizes, source, skipped files, and how
                                  many images were EXIF-rotated, had transparency or were upscaled
The official test split stays the test split (or a seeded stratified test_fraction is carved out
when the source has none), or test_per_class seeded images per class of it; val is a seeded
stratified val_fraction of the training split (none at 0); train_per_class then keeps that many
seeded training images per class (test_per_class: at most that many, all of a class with fewer).

Image files are decoded by worker processes (one per core) in chunks and streamed to disk in
order, so memory stays bounded whatever the data set's size.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from pipeline import sources, stage

log = logging.getLogger("pipeline.prepare")
SPLITS = ("train", "val", "test")
CHUNK_BYTES = 16 << 20   # pixels per decoding task (and per write): bounds memory
MAX_CHUNK = 1024         # images per task, so small images still spread over the workers


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of positions 0..N-1 into (keep, held_out); fraction 0 holds none out."""
    from sklearn.model_selection import train_test_split  # imported here: keeps no-op runs fast
    idx = np.arange(len(labels))
    if fraction == 0:
        return idx, idx[:0]
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as e:
        raise stage.PipelineError(
            f"cannot split {len(labels)} images of {len(np.unique(labels))} classes with fraction "
            f"{fraction}: {e}; change val_fraction/test_fraction in params.yaml") from None
    return np.sort(keep), np.sort(held)


def per_class(labels: np.ndarray, k: int, seed: int, classes: list[str], split: str) -> np.ndarray:
    """Seeded choice of k positions per class (sorted) of a split's labels.

    Training images are the recipe: a class with fewer than k is an error. Test images only size
    the test set: a class with fewer keeps all it has, and the log names it."""
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for c in range(len(classes)):
        pos = np.flatnonzero(labels == c)
        if len(pos) < k and split == "train":
            raise stage.PipelineError(f"train_per_class is {k} but class {classes[c]!r} has only {len(pos)} "
                                      f"training images left after the val split; lower train_per_class")
        if len(pos) < k:
            short.append(f"{classes[c]} ({len(pos)})")
        chosen.append(rng.choice(pos, size=min(k, len(pos)), replace=False))
    if short:
        log.warning("test_per_class is %d; %d class(es) have fewer test images and keep them all: %s",
                    k, len(short), ", ".join(short))
    return np.sort(np.concatenate(chosen))


def plan_splits(raw: sources.Raw, cfg: dict) -> dict[str, tuple[sources.Items, np.ndarray]]:
    """For each split, the official Items it is drawn from and the positions taken."""
    train_pos = np.arange(len(raw.train))
    if raw.test is None:
        if "test_fraction" not in cfg:
            raise stage.PipelineError(f"this {cfg['source']['kind']} source has no official test split: "
                                      f"set test_fraction (e.g. 0.2) for the data set in params.yaml")
        train_pos, test_pos = split_indices(raw.train.labels, cfg["test_fraction"], cfg["split_seed"])
        test = (raw.train, test_pos)
    else:
        if "test_fraction" in cfg:
            log.warning("test_fraction is not used: the source has an official test split")
        test = (raw.test, np.arange(len(raw.test)))
    if "test_per_class" in cfg:
        items, pos = test
        test = (items, pos[per_class(items.labels[pos], cfg["test_per_class"], cfg["split_seed"], raw.classes, "test")])
    keep, held = split_indices(raw.train.labels[train_pos], cfg["val_fraction"], cfg["split_seed"])
    train_pos, val_pos = train_pos[keep], train_pos[held]
    if "train_per_class" in cfg:
        chosen = per_class(raw.train.labels[train_pos], cfg["train_per_class"], cfg["split_seed"], raw.classes,
                           "train")
        train_pos = train_pos[chosen]
    return {"train": (raw.train, train_pos), "val": (raw.train, val_pos), "test": test}


# ---- decoding in worker processes ----

_LOADERS: dict = {}


def _init_worker(loaders: dict) -> None:
    _LOADERS.update(loaders)   # once per worker: the loaders hold every file path of the data set


def _load(key: int, chunk: np.ndarray):
    return _LOADERS[key](chunk)


def decoded_chunks(pool: ProcessPoolExecutor | None, window: int, key: int, items: sources.Items,
                   positions: np.ndarray) -> Iterator[tuple[np.ndarray, sources.base.Loaded]]:
    """(chunk positions, (images, bad)) in order, with at most `window` chunks in flight."""
    size = max(1, min(MAX_CHUNK, CHUNK_BYTES // int(np.prod(items.image_shape))))
    chunks = [positions[s:s + size] for s in range(0, len(positions), size)]
    if pool is None or not items.parallel:
        yield from ((c, items.load(c)) for c in chunks)
        return
    pending: collections.deque = collections.deque()
    for chunk in chunks:
        pending.append((chunk, pool.submit(_load, key, chunk)))
        if len(pending) >= window:
            c, future = pending.popleft()
            yield c, future.result()
    while pending:
        c, future = pending.popleft()
        yield c, future.result()


def write_split(out: Path, split: str, items: sources.Items, positions: np.ndarray,
                chunks: Iterator, skip_unreadable: bool, notes: collections.Counter) -> tuple[int, list[str]]:
    """Stream the split's images to {split}_images.npy; returns (count, unreadable files) and adds
    what was done to some images (sources.base.NOTES) to `notes`."""
    path = out / f"{split}_images.npy"
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                       shape=(len(positions), *items.image_shape))
    offset = header.offset
    del header
    kept, bad = [], []
    with open(path, "r+b") as f, tqdm(total=len(positions), desc=f"prepare {split}", unit="img",
                                       mininterval=2) as bar:
        f.seek(offset)
        for chunk, (images, failed, done) in chunks:
            f.write(np.ascontiguousarray(images).tobytes())   # sequential writes: no big page cache in RSS
            notes.update(done)
            failed_pos = {p for p, _ in failed}
            kept += [p for p in chunk if p not in failed_pos]
            bad += [why for _, why in failed]
            bar.update(len(chunk))
    if bad and not skip_unreadable:
        raise stage.PipelineError(
            f"{len(bad)} unreadable image file(s) in the {split} split: {'; '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}. Fix or remove them, or set skip_unreadable: true for the "
            f"data set in params.yaml to leave them out")
    if bad:   # rare: shrink the file to the images actually written
        _truncate(path, len(kept), items.image_shape)
    kept = np.asarray(kept, dtype=np.int64)
    np.save(out / f"{split}_labels.npy", items.labels[kept].astype(np.int64))
    for name, labels in items.extra_labels.items():
        np.save(out / f"{split}_{name}_labels.npy", np.asarray(labels)[kept].astype(np.int64))
    return len(kept), bad


def _truncate(path: Path, n: int, shape: tuple) -> None:
    old = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.name + ".part")
    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
    for s in range(0, n, 1024):
        new[s:s + 1024] = old[s:min(n, s + 1024)]   # the tail beyond n was never written
    new.flush()
    del new, old
    os.replace(tmp, path)


def prepare(cfg: dict, raw_dir: Path, out: Path, workers: int = 0) -> dict:
    """Write the prepared form of one data set to `out`; return its meta."""
    raw = sources.read(cfg, raw_dir)
    plan = plan_splits(raw, cfg)
    h, w, c = raw.train.image_shape
    meta = {"classes": raw.classes, "image_size": [h, w], "channels": c, "counts": {},
            "source": cfg["source"], **raw.meta}
    loaders = {id(items): items.load for items, _ in plan.values()}
    workers = workers or len(os.sched_getaffinity(0))
    parallel = workers > 1 and any(items.parallel for items, _ in plan.values())
    log.info("preparing %s: %s images, %d worker(s)", out, {s: len(p) for s, (_, p) in plan.items()},
             workers if parallel else 1)
    skipped, notes = {}, collections.Counter()
    with stage.atomic_path(out) as tmp, (
            stage.worker_pool(workers, initializer=_init_worker, initargs=(loaders,))
            if parallel else contextlib.nullcontext()) as pool:
        tmp.mkdir()
        for split, (items, positions) in plan.items():
            chunks = decoded_chunks(pool, 2 * workers, id(items), items, positions)
            meta["counts"][split], bad = write_split(tmp, split, items, positions, chunks,
                                                     cfg.get("skip_unreadable", False), notes)
            if bad:
                log.warning("skipped %d unreadable file(s) in %s: %s", len(bad), split, "; ".join(bad[:20]))
                skipped[split] = bad
        meta["skipped"] = skipped
        meta["image_notes"] = {k: notes[k] for k in sources.base.NOTES}
        if notes:
            log.info("%s", "; ".join(f"{n} image(s) {sources.base.NOTES[k]}" for k, n in notes.items()))
        emptied = [raw.classes[c] for c in np.setdiff1d(np.arange(len(raw.classes)),
                                                        np.load(tmp / "train_labels.npy"))]
        if emptied:   # only possible when skip_unreadable dropped every image of a class
            raise stage.PipelineError(f"no readable training images left for class(es) {', '.join(emptied[:5])}; "
                                      f"fix their image files")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("prepared %s: %s", out, meta["counts"])
    return meta


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "prepare", "datasets", deps={"config": "results/configs/datasets/{ds}.json", "raw": "data/raw/{ds}"},
    outs={"out": stage.Out("data/prepared/{ds}", directory=True)}, help={"config": "the data set's entry (JSON)"})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    ap = ROW.parser(__doc__)
    ap.add_argument("--workers", type=int, default=0, help="decoding processes (default: one per core)")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    prepare(stage.read_json(args.config), args.raw, args.out, args.workers)


if __name__ == "__main__":
    stage.cli(main)
