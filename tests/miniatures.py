"""Miniature archives in each official layout: same member names, pickle keys and annotation files,
a few tiny images per class. Every image encodes its class in its colour, so a test can check
that labels and pixels travelled together."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def colour(label: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust solid colour per class."""
    return (20 + 50 * (label % 5), 20 + 40 * (label // 5 % 6), 230 - 60 * (label // 30 % 4))


def image_bytes(label: int, size=(8, 8), fmt="JPEG", mode="RGB") -> bytes:
    img = Image.new("RGB", size, colour(label)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def cifar_rows(labels: list[int]) -> np.ndarray:
    """(N, 3072) uint8 in CIFAR's row layout (R plane, G plane, B plane); pixel (0,0) R = index."""
    imgs = np.stack([np.broadcast_to(np.array(colour(l), np.uint8), (32, 32, 3)).copy() for l in labels])
    imgs[:, 0, 0, 0] = np.arange(len(labels)) % 256      # tells images apart
    return imgs.transpose(0, 3, 1, 2).reshape(len(labels), -1)


def cifar10(path: Path, train_per_class=6, test_per_class=2, replace: dict[str, bytes] | None = None) -> Path:
    """The archive; `replace` swaps members' bytes (keyed by file name, e.g. "data_batch_1")."""
    members = cifar10_members(train_per_class, test_per_class)
    members.update({f"cifar-10-batches-py/{name}": data for name, data in (replace or {}).items()})
    return write_tar(path / "cifar-10-python.tar.gz", members)


def cifar10_members(train_per_class=6, test_per_class=2) -> dict[str, bytes]:
    names = [f"class{c}" for c in range(10)]
    members = {}
    train = [c for c in range(10) for _ in range(train_per_class)]
    for b in range(5):   # the training images spread over data_batch_1..5
        labels = train[b::5]
        members[f"cifar-10-batches-py/data_batch_{b + 1}"] = pickle.dumps(
            {"batch_label": f"training batch {b + 1} of 5", "labels": labels,
             "data": cifar_rows(labels), "filenames": [f"img{i}.png" for i in range(len(labels))]})
    test = [c for c in range(10) for _ in range(test_per_class)]
    members["cifar-10-batches-py/test_batch"] = pickle.dumps(
        {"batch_label": "testing batch 1 of 1", "labels": test, "data": cifar_rows(test),
         "filenames": [f"t{i}.png" for i in range(len(test))]})
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072})
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return members


def cifar100(path: Path, train_per_class=5, test_per_class=1) -> Path:
    fine = [f"fine{c}" for c in range(100)]
    coarse = [f"coarse{c}" for c in range(20)]
    members = {}
    for split, k in (("train", train_per_class), ("test", test_per_class)):
        labels = [c for c in range(100) for _ in range(k)]
        members[f"cifar-100-python/{split}"] = pickle.dumps(
            {"filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": split,
             "fine_labels": labels, "coarse_labels": [l // 5 for l in labels], "data": cifar_rows(labels)})
    members["cifar-100-python/meta"] = pickle.dumps(
        {"fine_label_names": fine, "coarse_label_names": coarse})
    return write_tar(path / "cifar-100-python.tar.gz", members)


TINY_WNIDS = ["n01443537", "n01629819", "n01641577"]
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander",
              "n01641577": "bullfrog, Rana catesbeiana", "n00000001": "not one of ours"}


def tiny_imagenet(path: Path, train_per_class=4, val_per_class=2) -> Path:
    root = "tiny-imagenet-200"
    members = {f"{root}/wnids.txt": "\n".join(reversed(TINY_WNIDS)).encode() + b"\n",
               f"{root}/words.txt": "".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()).encode()}
    for c, w in enumerate(TINY_WNIDS):
        for i in range(train_per_class):
            members[f"{root}/train/{w}/images/{w}_{i}.JPEG"] = image_bytes(c, (64, 64))
        members[f"{root}/train/{w}/{w}_boxes.txt"] = b"".join(
            f"{w}_{i}.JPEG\t0\t0\t63\t63\n".encode() for i in range(train_per_class))
    rows = []
    for i in range(val_per_class * len(TINY_WNIDS)):
        c = i % len(TINY_WNIDS)
        members[f"{root}/val/images/val_{i}.JPEG"] = image_bytes(c, (64, 64))
        rows.append(f"val_{i}.JPEG\t{TINY_WNIDS[c]}\t0\t0\t63\t63\n")
    members[f"{root}/val/val_annotations.txt"] = "".join(rows).encode()
    members[f"{root}/test/images/test_0.JPEG"] = image_bytes(0, (64, 64))
    return write_zip(path / "tiny-imagenet-200.zip", members)


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def cub_photo(label: int) -> bytes:
    """A 48x32 landscape photo: class colour in the centre square, black bars left and right."""
    img = Image.new("RGB", (48, 32), (0, 0, 0))
    img.paste(colour(label), (8, 0, 40, 32))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def cub200(path: Path, train_per_class=10, test_per_class=2) -> Path:
    root = "CUB_200_2011"
    members, images, labels, split = {}, [], [], []
    n = 0
    for c, name in enumerate(CUB_CLASSES):
        for i in range(train_per_class + test_per_class):
            n += 1
            file = f"{name}/{name.split('.')[1]}_{i:04d}_{n}.jpg"
            members[f"{root}/images/{file}"] = cub_photo(c)
            images.append(f"{n} {file}\n")
            labels.append(f"{n} {c + 1}\n")
            split.append(f"{n} {int(i < train_per_class)}\n")
    members[f"{root}/images.txt"] = "".join(images).encode()
    members[f"{root}/image_class_labels.txt"] = "".join(labels).encode()
    members[f"{root}/train_test_split.txt"] = "".join(split).encode()
    members[f"{root}/classes.txt"] = "".join(f"{c + 1} {n}\n" for c, n in enumerate(CUB_CLASSES)).encode()
    members[f"{root}/README"] = b"miniature"
    members["attributes.txt"] = b"1 has_bill_shape::curved\n"
    return write_tar(path / "CUB_200_2011.tgz", members)


def image_folder(root: Path, classes: dict[str, int], split_dirs: bool = False) -> Path:
    """class folders (or train/ and test/ of them) of mixed formats and modes: PNG RGBA, JPEG L, BMP."""
    kinds = [("png", "PNG", "RGBA"), ("jpg", "JPEG", "L"), ("bmp", "BMP", "RGB")]
    for split in ("train", "test") if split_dirs else ("",):
        for c, (name, n) in enumerate(classes.items()):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n if not split or split == "train" else max(1, n // 3)):
                ext, fmt, mode = kinds[i % len(kinds)]
                (d / f"{i:03d}.{ext}").write_bytes(image_bytes(c, (12, 10), fmt, mode))
    return root


def tar_of_folder(folder: Path, path: Path, arcname: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path
