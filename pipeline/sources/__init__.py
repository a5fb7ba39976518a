"""Data sources: how each kind of data set is fetched and read, before any splitting.

A source kind is a module with two halves, one per stage:
  fetch(source_cfg, raw_dir)   download stage: the raw files, verified, into raw_dir
  read(dataset_cfg, raw_dir)   prepare stage: a Raw with class names and lazily loaded splits
and ARCHIVE (or ARCHIVES by kind): the published archive it needs, None if none.
Prepare turns every Raw into the same on-disk form, so training never knows the source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pipeline.sources import cifar, cub, digits, folder, tiny_imagenet
from pipeline.sources.archives import Archive
from pipeline.sources.base import ArrayLoader, FileLoader, Items, Raw  # noqa: F401 (the interface)

KINDS = {"sklearn_digits": digits, "cifar10": cifar, "cifar100": cifar,
         "tiny_imagenet": tiny_imagenet, "cub200": cub, "folder": folder}


def archive(source: dict) -> Optional[Archive]:
    """The published archive a source kind downloads (None: digits, or a user's own folder)."""
    module = KINDS[source["kind"]]
    return getattr(module, "ARCHIVES", {}).get(source["kind"]) or getattr(module, "ARCHIVE", None)


def fetch(source: dict, raw_dir: Path) -> None:
    KINDS[source["kind"]].fetch(source, raw_dir)


def read(cfg: dict, raw_dir: Path) -> Raw:
    return KINDS[cfg["source"]["kind"]].read(cfg, raw_dir)
