"""CIFAR-10 and CIFAR-100: the python-pickle archives, with torchvision's member lists and md5s.

The batches are pickles, and a pickle can run code when it is loaded. So this module reads each
member whole, checks its md5 (torchvision's, or, when the user overrides the archive md5 for a
mirror or a test's miniature, the md5 recorded when that verified archive was extracted), and
unpickles it with an unpickler that builds only what the official files hold: dicts, lists,
str, bytes, ints and numpy arrays. Whatever the md5, nothing else is ever constructed or called.
Each batch's layout is then checked (uint8 rows of 3072, one label in range per row).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
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
# key of the labels, label-names key in the meta file, number of classes
FINE = {"cifar10": ("labels", "label_names", 10), "cifar100": ("fine_labels", "fine_label_names", 100)}


def _member_names(tv) -> list[str]:
    return [n for n, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]


def fetch(source: dict, raw_dir: Path) -> None:
    tv = _tv_class(source["kind"])
    path = archives.obtain(ARCHIVES[source["kind"]].for_source(source), source)
    archives.extract(path, raw_dir)
    folder = raw_dir / tv.base_folder
    missing = [n for n in _member_names(tv) if not (folder / n).is_file()]
    if missing:
        raise PipelineError(f"{path} is not the {source['kind']} archive: {tv.base_folder}/ lacks "
                            f"{', '.join(missing)}; fetch {tv.url} again")
    md5s = {n: archives._md5(folder / n) for n in _member_names(tv)}
    (raw_dir / MEMBERS).write_text(json.dumps(md5s, indent=1))


def _expected_md5s(source: dict, raw_dir: Path) -> dict[str, str]:
    """torchvision's member md5s, or our record of them if the archive md5 was overridden."""
    tv = _tv_class(source["kind"])
    if source.get("md5", ARCHIVES[source["kind"]].md5) == tv.tgz_md5:
        return {n: md5 for n, md5 in tv.train_list + tv.test_list + [[tv.meta["filename"], tv.meta["md5"]]]}
    record = raw_dir / MEMBERS
    try:
        recorded = json.loads(record.read_text())
        if set(recorded) == set(_member_names(tv)) and all(
                isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v) for v in recorded.values()):
            return recorded
    except (OSError, ValueError):
        pass
    raise PipelineError(f"{record} is missing or damaged: delete {raw_dir} and rerun the download stage")


class _BatchUnpickler(pickle.Unpickler):
    """Builds only builtins and numpy arrays: the globals an ndarray's pickle names (numpy 1 and 2,
    protocols 2 to 5). Anything else (os.system, builtins.eval, ...) is refused before it exists."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR file holds")


def _load(path: Path, md5: str) -> dict:
    """One member, read once: md5 checked, then unpickled by the restricted unpickler."""
    data = path.read_bytes()
    if hashlib.md5(data).hexdigest() != md5:
        raise PipelineError(f"{path} does not match its checksum ({md5}): the raw files were changed; "
                            f"delete {path.parent.parent} and rerun the download stage")
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:   # any failure of hostile bytes, whatever the unpickler raises
        raise PipelineError(f"{path} is not a CIFAR pickle ({type(e).__name__}: {e}); the archive is "
                            f"not the published one: fetch it again") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict; fetch the archive again")
    return obj


def _batch(path: Path, md5: str, keys: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, 32, 32, 3) uint8 images and, per label key, (N,) labels checked to lie in [0, classes)."""
    batch = _load(path, md5)
    rows = batch.get("data")
    if not (isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
            and rows.shape[1] == 3 * 32 * 32):
        raise PipelineError(f"{path}: 'data' is not uint8 rows of 3072 pixels; fetch the archive again")
    labels = {}
    for key, classes in keys.items():
        values = batch.get(key)
        if not (isinstance(values, list) and len(values) == len(rows)
                and all(type(v) is int and 0 <= v < classes for v in values)):
            raise PipelineError(f"{path}: '{key}' is not {len(rows)} labels in [0, {classes}); "
                                f"fetch the archive again")
        labels[key] = np.array(values, dtype=np.int64)
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _names(meta: dict, path: Path, key: str, count: int) -> list[str]:
    names = meta.get(key)
    if not (isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names)):
        raise PipelineError(f"{path}: '{key}' is not {count} class names; fetch the archive again")
    return names


def read(cfg: dict, raw_dir: Path) -> Raw:
    kind = cfg["source"]["kind"]
    tv = _tv_class(kind)
    md5s, folder = _expected_md5s(cfg["source"], raw_dir), raw_dir / tv.base_folder
    fine, names_key, classes = FINE[kind]
    keys = {fine: classes, **({"coarse_labels": 20} if kind == "cifar100" else {})}
    meta_path = folder / tv.meta["filename"]
    meta = _load(meta_path, md5s[tv.meta["filename"]])
    splits = []
    for members in (tv.train_list, tv.test_list):
        batches = [_batch(folder / n, md5s[n], keys) for n, _ in members]
        images = np.concatenate([b[0] for b in batches])
        labels = {k: np.concatenate([b[1][k] for b in batches]) for k in keys}
        extra = {"coarse": labels["coarse_labels"]} if kind == "cifar100" else {}
        splits.append(array_items(images, labels[fine], cfg, **extra))
    raw = Raw(classes=_names(meta, meta_path, names_key, classes), train=splits[0], test=splits[1])
    if kind == "cifar100":   # keep the 20 superclasses available beside the 100 fine ones
        raw.meta["coarse_classes"] = _names(meta, meta_path, "coarse_label_names", 20)
    return raw
