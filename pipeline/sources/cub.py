"""CUB-200-2011: 11,788 photos of 200 bird species, official split 5,994 train / 5,794 test.

    CUB_200_2011/images.txt               <id> <class folder>/<file>.jpg
    CUB_200_2011/image_class_labels.txt   <id> <class 1..200>
    CUB_200_2011/train_test_split.txt     <id> <1 = train, 0 = test>
    CUB_200_2011/classes.txt              <class> <NNN.Species_name>
    CUB_200_2011/images/<class folder>/<file>.jpg
Photos are stored at image_size (default 256) on the short side, centre-cropped square: large
enough for 224-pixel crops. `train_per_class` (dataset param) reproduces the course's 15 per class.
The .tgz is decompressed once into raw/images.tar, whose members prepare's workers read by offset.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.sources import archives
from pipeline.sources.base import Raw, image_items
from pipeline.stage import PipelineError

ARCHIVE = archives.Archive("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                           "CUB_200_2011.tgz", "97eceeb196236b17998738112f37df78")
ROOT = "CUB_200_2011"


TAR = "images.tar"


def fetch(source: dict, raw_dir: Path) -> None:
    path = archives.obtain(ARCHIVE.for_source(source), source)
    archives.repack_tar(path, raw_dir / TAR)
    _index(archives.Members(raw_dir / TAR, label=path))   # every image its index lists is there, or no download


def _table(members: archives.Members, name: str) -> dict[int, str]:
    text = members.read_text(f"{ROOT}/{name}")
    return {int(k): v.strip() for k, v in (line.split(maxsplit=1) for line in text.splitlines() if line.strip())}


def _index(members: archives.Members) -> tuple[dict[int, str], ...]:
    """(images, labels, is_train, classes) from the archive's index files, which must agree with
    each other and with the images the archive holds."""
    images, labels = _table(members, "images.txt"), _table(members, "image_class_labels.txt")
    is_train, classes = _table(members, "train_test_split.txt"), _table(members, "classes.txt")
    if not images.keys() == labels.keys() == is_train.keys():
        raise PipelineError(f"{members.label}: images.txt, image_class_labels.txt and train_test_split.txt "
                            f"list different image ids; the archive is damaged, fetch it again")
    members.loader_args([f"{ROOT}/images/{name}" for name in images.values()])   # all listed images present
    return images, labels, is_train, classes


def read(cfg: dict, raw_dir: Path) -> Raw:
    members = archives.Members(raw_dir / TAR)
    images, labels, is_train, classes = _index(members)
    class_ids = sorted(classes)
    index = {c: i for i, c in enumerate(class_ids)}
    size, channels = cfg.get("image_size", 256), cfg.get("channels", 3)
    splits = {}
    for name, flag in (("train", "1"), ("test", "0")):
        ids = [i for i in sorted(images) if is_train[i] == flag]
        names = [f"{ROOT}/images/{images[i]}" for i in ids]
        splits[name] = image_items(names, [index[int(labels[i])] for i in ids], size, channels,
                                   **members.loader_args(names))
    # "001.Black_footed_Albatross" -> "Black footed Albatross"
    names = [classes[c].split(".", 1)[-1].replace("_", " ") for c in class_ids]
    return Raw(classes=names, train=splits["train"], test=splits["test"])
