"""CIFAR-10 and CIFAR-100: the python-pickle archives, read with torchvision's CIFAR classes.

torchvision knows every member file and its md5 and checks them all before it unpickles any.
When the user overrides the archive md5 (own mirror, or a test's miniature archive), the members
are checked instead against the md5s recorded when that verified archive was extracted.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from pipeline.sources import archives
from pipeline.sources.base import Raw, array_items
from pipeline.stage import PipelineError

MEMBERS = "members.md5.json"


def _tv_class(kind: str):
    from torchvision.datasets import CIFAR10, CIFAR100
    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[kind]


# The published archives (the same as torchvision's; spelled out so that finding the archive
# does not cost `import torch`, and a test checks they agree).
ARCHIVES = {
    "cifar10": archives.Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": archives.Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                 "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def fetch(source: dict, raw_dir: Path) -> None:
    tv = _tv_class(source["kind"])
    path = archives.obtain(ARCHIVES[source["kind"]].for_source(source), source)
    archives.extract(path, raw_dir)
    folder = raw_dir / tv.base_folder
    names = [n for n, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise PipelineError(f"{path} is not the {source['kind']} archive: {tv.base_folder}/ lacks "
                            f"{', '.join(missing)}; fetch {tv.url} again")
    (raw_dir / MEMBERS).write_text(json.dumps({n: archives._md5(folder / n) for n in names}, indent=1))


def _verified_class(source: dict, raw_dir: Path):
    """torchvision's class, with member md5s from our record if the archive md5 was overridden."""
    tv = _tv_class(source["kind"])
    if source.get("md5", ARCHIVES[source["kind"]].md5) == tv.tgz_md5:
        return tv
    recorded = json.loads((raw_dir / MEMBERS).read_text())
    return type(tv.__name__, (tv,), {
        "train_list": [[n, recorded[n]] for n, _ in tv.train_list],
        "test_list": [[n, recorded[n]] for n, _ in tv.test_list],
        "meta": {**tv.meta, "md5": recorded[tv.meta["filename"]]}})


def read(cfg: dict, raw_dir: Path) -> Raw:
    source = cfg["source"]
    cls = _verified_class(source, raw_dir)
    try:   # the constructor checks every pickle's md5 before unpickling it
        train, test = cls(root=raw_dir, train=True), cls(root=raw_dir, train=False)
    except RuntimeError as e:
        raise PipelineError(f"{raw_dir}: {e}; the raw files do not match their checksums: delete "
                            f"{raw_dir} and rerun the download stage") from None
    raw = Raw(classes=list(train.classes),
              train=array_items(train.data, np.array(train.targets), cfg),
              test=array_items(test.data, np.array(test.targets), cfg))
    if source["kind"] == "cifar100":   # keep the 20 superclasses available beside the 100 fine ones
        folder = raw_dir / cls.base_folder
        for items, (name, _) in ((raw.train, cls.train_list[0]), (raw.test, cls.test_list[0])):
            with open(folder / name, "rb") as f:   # md5 already verified by the constructor above
                items.extra_labels["coarse"] = np.array(pickle.load(f, encoding="latin1")["coarse_labels"])
        with open(folder / cls.meta["filename"], "rb") as f:
            raw.meta["coarse_classes"] = pickle.load(f, encoding="latin1")["coarse_label_names"]
    return raw
