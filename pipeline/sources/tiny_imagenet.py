"""Tiny ImageNet: 200 classes of 64x64 JPEGs. Its labelled val/ set is our test split.

    tiny-imagenet-200/wnids.txt                       the 200 class ids (WordNet ids)
    tiny-imagenet-200/words.txt                       wnid <tab> names, for all of WordNet
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      500 per class, listed in train/<wnid>/<wnid>_boxes.txt
    tiny-imagenet-200/val/images/*.JPEG + val/val_annotations.txt (file, wnid, box)
    tiny-imagenet-200/test/images/*.JPEG              unlabelled: not used
The verified .zip is read in place (120,000 small files are never extracted): the raw folder
records its path and md5, and prepare checks the md5 again before reading.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.sources import archives
from pipeline.sources.base import Raw, image_items
from pipeline.stage import PipelineError

ARCHIVE = archives.Archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                           "tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")
ROOT = "tiny-imagenet-200"
RECORD = "archive.json"


def fetch(source: dict, raw_dir: Path) -> None:
    archive = ARCHIVE.for_source(source)
    path = archives.obtain(archive, source)
    archives.check_zip(path)
    _layout(archives.Members(path))            # every listed image there, or no download
    (raw_dir / RECORD).write_text(json.dumps({"path": str(path.resolve()), "md5": archive.md5}, indent=1))


def _rows(members: archives.Members, name: str) -> list[list[str]]:
    text = members.read_text(f"{ROOT}/{name}")
    return [line.rstrip("\r").split("\t") for line in text.splitlines() if line.strip()]


def _layout(members: archives.Members) -> tuple[list[str], dict[str, str], list[str], list[int], list[list[str]]]:
    """(wnids, words, train image names, their labels, val annotation rows), checked: every class
    has training images, and every image the archive's own lists name (each class's _boxes.txt,
    val_annotations.txt) is in it, so a cut or damaged archive is refused, not read in part."""
    wnids = sorted(row[0] for row in _rows(members, "wnids.txt"))
    words = {row[0]: row[1] for row in _rows(members, "words.txt") if len(row) > 1}
    index = {w: i for i, w in enumerate(wnids)}
    train_names, train_labels = [], []
    for w in wnids:
        prefix = f"{ROOT}/train/{w}/images/"
        names = sorted(prefix + row[0] for row in _rows(members, f"train/{w}/{w}_boxes.txt"))
        if not names:
            raise PipelineError(f"class {w} has no images under {prefix} in {members.label}")
        train_names += names
        train_labels += [index[w]] * len(names)
    test_rows = _rows(members, "val/val_annotations.txt")
    unknown = sorted({row[1] for row in test_rows} - set(index))
    if unknown:
        raise PipelineError(f"val_annotations.txt names classes not in wnids.txt: {', '.join(unknown[:5])}")
    members.loader_args(train_names)
    members.loader_args([f"{ROOT}/val/images/{row[0]}" for row in test_rows])   # all present
    return wnids, words, train_names, train_labels, test_rows


def read(cfg: dict, raw_dir: Path) -> Raw:
    record = json.loads((raw_dir / RECORD).read_text())
    path = Path(record["path"])
    # It lives outside the raw folder, so it is checked again here: changed since download means
    # damaged (the fix is a fresh copy), never a new checksum to accept.
    archives.verify(path, record["md5"], key=None)
    members = archives.Members(path)
    wnids, words, train_names, train_labels, test_rows = _layout(members)
    index = {w: i for i, w in enumerate(wnids)}
    size, channels = cfg.get("image_size", 64), cfg.get("channels", 3)
    test_names = [f"{ROOT}/val/images/{row[0]}" for row in test_rows]
    return Raw(classes=[words.get(w, w) for w in wnids],
               train=image_items(train_names, train_labels, size, channels,
                                 **members.loader_args(train_names)),
               test=image_items(test_names, [index[row[1]] for row in test_rows], size, channels,
                                **members.loader_args(test_names)),
               meta={"class_ids": wnids})
