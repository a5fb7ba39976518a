"""A user's images: a directory, or a .tar/.tar.gz/.tgz/.zip of it, laid out as either

    train/<class>/<image>  and  test/<class>/<image>     (the test split is given), or
    <class>/<image>                                       (prepare carves a seeded test_fraction)

optionally inside one wrapping folder (e.g. cifar10-jpeg/train/...). Any format Pillow reads.
Nothing is extracted to thousands of files: the download stage records a directory or a .zip
where it is (path + content digest, so an edit reruns prepare) and turns a tar into one
uncompressed images.tar; prepare's workers then read each image directly by name or offset.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from pipeline.sources import archives
from pipeline.sources.base import Items, Raw, image_items
from pipeline.stage import PipelineError

log = logging.getLogger("pipeline.sources")
RECORD, TAR = "folder.json", "images.tar"


def walk(root: Path) -> Iterator[tuple[str, Path, bool]]:
    """(relative name, path, is_dir) of every entry below root that is not hidden, in a fixed order.
    A link is refused, as in an archive: it can point out of the folder, and a change at its target
    would go unseen (os.walk does not follow a folder link; a file link would be followed)."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        for name, is_dir in [(d, True) for d in dirnames] + [(f, False) for f in sorted(filenames)]:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.is_symlink():
                raise PipelineError(
                    f"{path} is a symbolic link (to {os.readlink(path)}): image folders, like archives, take no "
                    f"links; copy the files in (e.g. cp -rL) or point source.path at the real folder")
            yield (rel / name).as_posix(), path, is_dir


def digest(directory: Path) -> str:
    """sha256 over a directory's relative file names and contents (hidden files left out)."""
    h = hashlib.sha256()
    for name, path, is_dir in sorted(walk(directory)):
        if not is_dir:
            h.update(name.encode())
            with open(path, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def local_path(source: dict) -> Path:
    path = Path(source["path"]).expanduser()
    if not path.exists():
        raise PipelineError(f"source.path {source['path']!r}: {path.resolve()} does not exist; point "
                            f"source.path in params.yaml at an image directory or a .tar/.tar.gz/.zip of one")
    return path


def fetch(source: dict, raw_dir: Path) -> None:
    path = local_path(source)
    if path.is_dir():
        if "md5" in source:
            raise PipelineError(f"source.md5 is set but source.path {path} is a directory; md5 checks "
                                f"archives only: remove source.md5")
        record = {"kind": "dir", "path": str(path.resolve()), "digest": digest(path)}
    else:
        if not archives.is_archive(path):
            raise PipelineError(f"source.path {source['path']!r}: {path.resolve()} is not an archive (.tar, .tar.gz, "
                                f".tgz or .zip) nor a directory; point source.path at the images' folder or archive")
        archives.verify(path, source.get("md5"))
        if zipfile.is_zipfile(path):
            archives.check_zip(path)            # read in place later, so checked (and pinned) now
            record = {"kind": "zip", "path": str(path.resolve()), "md5": archives._md5(path)}
        else:
            archives.repack_tar(path, raw_dir / TAR)
            record = {"kind": "tar"}
    (raw_dir / RECORD).write_text(json.dumps(record, indent=1))


@dataclass
class Tree:
    """The relative names of every file and folder of the image collection, and how to read them."""
    files: dict[str, object]                 # name -> path (dir), (offset, size) (tar), name (zip)
    dirs: set[str] = field(default_factory=set)
    where: dict = field(default_factory=dict)   # FileLoader's archive/offsets arguments
    label: str = ""

    def add(self, name: str, ref: object = None, is_dir: bool = False) -> None:
        parts = PurePosixPath(name).parts      # "./a/b" (tar -C dir .) -> ("a", "b")
        name = "/".join(parts)
        if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            return                           # hidden files and macOS zip metadata are not images
        if not is_dir:
            self.files[name] = ref
        self.dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + (1 if is_dir else 0)))

    def children(self, prefix: str) -> set[str]:
        return {n[len(prefix):].split("/")[0] for n in [*self.files, *self.dirs] if n.startswith(prefix)} - {""}


def _tree(raw_dir: Path) -> Tree:
    record = json.loads((raw_dir / RECORD).read_text())
    if record["kind"] == "dir":
        root = Path(record["path"])
        tree = Tree({}, label=str(root))
        for name, path, is_dir in walk(root):
            tree.add(name, None if is_dir else str(path), is_dir=is_dir)
        return tree
    if record["kind"] == "zip":
        path = Path(record["path"])
        if archives._md5(path) != record["md5"]:
            raise PipelineError(f"{path} changed since the download stage read it; rerun download "
                                f"(delete {raw_dir})")
        tree = Tree({}, where={"archive": path}, label=str(path))
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                tree.add(info.filename, info.filename, is_dir=info.is_dir())
        return tree
    tree = Tree({}, where={"archive": raw_dir / TAR}, label=str(raw_dir / TAR))
    with tarfile.open(raw_dir / TAR) as tar:
        for m in tar:
            tree.add(m.name, (m.offset_data, m.size), is_dir=m.isdir())
    return tree


def _base(tree: Tree) -> str:
    """Skip one wrapping folder of folders, e.g. cifar10-jpeg/ (but not a lone class folder)."""
    prefix = ""
    while True:
        top = tree.children(prefix)
        if len(top) != 1:
            return prefix
        (only,) = top
        inner = prefix + only + "/"
        if only in ("train", "test") or prefix + only not in tree.dirs or \
                any(f.startswith(inner) and "/" not in f[len(inner):] for f in tree.files):
            return prefix
        prefix = inner


def _class_folders(tree: Tree, base: str) -> dict[str, list[str]]:
    """class name -> its image files (every non-hidden file below it, so nothing goes unseen)."""
    members = {d[len(base):]: [] for d in tree.dirs if d.startswith(base) and "/" not in d[len(base):]}
    strays = []
    for name in tree.files:
        if name.startswith(base):
            cls, sep, _ = name[len(base):].partition("/")
            (members[cls] if sep else strays).append(name)
    where = f"{tree.label}:{base}" if base else tree.label
    if strays:
        log.warning("%s: ignoring %d files beside the class folders: %s", where, len(strays),
                    ", ".join(sorted(strays)[:5]))
    for cls, files in members.items():
        if not files:
            raise PipelineError(f"class folder {base}{cls}/ (in {tree.label}) holds no images; add images "
                                f"or remove the folder")
        files.sort()
    if len(members) < 2:
        raise PipelineError(f"{where}: found {len(members)} class folder(s) ({', '.join(members) or 'none'}); "
                            f"an image folder needs at least two <class>/<image> folders, at the top or "
                            f"under train/ and test/")
    return members


def read(cfg: dict, raw_dir: Path) -> Raw:
    tree = _tree(raw_dir)
    base = _base(tree)
    size, channels = cfg["image_size"], cfg.get("channels", 3)
    has_train = base + "train" in tree.dirs
    train = _class_folders(tree, base + "train/" if has_train else base)
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}

    def items(folders: dict[str, list[str]]) -> Items:
        names = [n for c in classes for n in folders[c]]
        labels = [index[c] for c in classes for _ in folders[c]]
        where = dict(tree.where)
        if "archive" in where and where["archive"].name == TAR:   # tar: read at byte offsets
            where["offsets"] = np.array([tree.files[n] for n in names], dtype=np.int64).reshape(-1, 2)
            refs = names
        else:
            refs = [tree.files[n] for n in names]                 # file paths, or zip member names
        return image_items(refs, labels, size, channels, **where)

    test = None
    if has_train:
        if base + "test" not in tree.dirs:
            raise PipelineError(f"{tree.label}: has train/ but no test/; add test/<class>/<image> folders, "
                                f"or put the class folders at the top and set test_fraction")
        test_folders = _class_folders(tree, base + "test/")
        missing, extra = sorted(set(classes) - set(test_folders)), sorted(set(test_folders) - set(classes))
        if missing or extra:
            raise PipelineError(f"{tree.label}: train/ and test/ hold different classes (missing from test/: "
                                f"{', '.join(missing) or '-'}; only in test/: {', '.join(extra) or '-'}); "
                                f"give both the same class folders")
        test = items(test_folders)
    return Raw(classes=classes, train=items(train), test=test)
