"""What every source returns: class names and lazily loaded splits, plus the two image loaders.

A loader is called with positions into its split and returns (images, bad, notes):
    images  (B', H, W, C) uint8, the decodable images among the positions, in order
    bad     [(position, "file: why")] for those that could not be decoded (B' = B - len(bad))
    notes   Counter of what was done to some images on the way (NOTES), for meta.json and the log
Loaders are plain picklable objects so prepare can run them in worker processes.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

Loaded = tuple[np.ndarray, list[tuple[int, str]], Counter]
NOTES = {"exif_rotated": "turned upright by their EXIF orientation",
         "transparent": "with transparent pixels: alpha dropped, RGB kept (as torchvision's ImageFolder does)",
         "upscaled": "smaller than image_size: upscaled"}


@dataclass
class Items:
    """One official split: labels up front, pixels loaded on demand in batches."""
    labels: np.ndarray                              # (N,) int64
    load: Callable[[np.ndarray], Loaded]            # positions (B,) -> (images, bad)
    image_shape: tuple[int, int, int]               # (H, W, C) of every loaded image
    parallel: bool = False                          # decoding files: worth worker processes
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. CIFAR-100 "coarse"

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Raw:
    classes: list[str]
    train: Items
    test: Optional[Items]      # None: the source has no official test split; prepare carves one
    meta: dict = field(default_factory=dict)        # extra facts for meta.json (class ids, ...)


def to_8bit(img):
    """High-bit-depth greyscale (16-bit PNG/TIFF: modes I;16*, I, F) scaled to 8 bits over its
    type's full range, as a viewer shows it; Pillow's own convert("L") would clip it to white."""
    from PIL import Image
    if img.mode.startswith("I;16"):
        full = 65535.0
    elif img.mode == "I":
        full = 65535.0 if np.asarray(img).max() > 255 else 255.0     # 16-bit data Pillow widened
    elif img.mode == "F":
        full = 1.0 if np.asarray(img).max() <= 1.0 else 255.0
    else:
        return img
    x = np.asarray(img, dtype=np.float64)
    if x.min() < 0 or x.max() > full:
        raise ValueError(f"{img.mode} pixel values span {x.min():g}..{x.max():g}, outside 0..{full:g}; "
                         f"convert the image to 8 or 16 bits per channel")
    return Image.fromarray(np.rint(x * 255.0 / full).astype(np.uint8), "L")


def to_square_array(img, size: Optional[int], channels: int, notes: Optional[Counter] = None):
    """PIL image -> uint8 (H, W, C): upright by its EXIF orientation (as a photo viewer shows it),
    RGB or grayscale, short side to `size`, centre-cropped square. `notes` counts what was done
    beyond that (NOTES).

    Square sources (CIFAR, Tiny ImageNet) are thus plainly resized; photos (CUB) keep their
    centre, like torchvision's Resize(size) + CenterCrop(size).
    """
    from PIL import Image, ImageOps
    notes = Counter() if notes is None else notes
    img = to_8bit(img)
    if size is not None and img.format == "JPEG" and min(img.size) >= 2 * size:
        img.draft("RGB" if channels == 3 else "L", (size, size))   # decode at 1/2..1/8 scale: faster
    if img.getexif().get(0x0112, 1) != 1:                          # EXIF Orientation: a phone photo
        img = ImageOps.exif_transpose(img)
        notes["exif_rotated"] += 1
    if (img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info) and \
            img.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        notes["transparent"] += 1
    if size is not None and min(img.size) < size:
        notes["upscaled"] += 1
    img = img.convert("RGB" if channels == 3 else "L")            # grayscale/RGBA/palette -> RGB or L
    if size is not None and img.size != (size, size):
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], channels)


@dataclass
class ArrayLoader:
    """Loads batches from an in-memory (N, H, W, C) uint8 array, resizing only if asked to."""
    images: np.ndarray
    size: Optional[int] = None
    channels: Optional[int] = None

    def __call__(self, idx: np.ndarray) -> Loaded:
        batch = self.images[idx]
        h, w, c = batch.shape[1:]
        resize = self.size is not None and (h, w) != (self.size, self.size)
        if not resize and self.channels in (None, c):
            return batch, [], Counter()
        from PIL import Image
        mode, notes = ("RGB" if c == 3 else "L"), Counter()
        return np.stack([to_square_array(Image.fromarray(x.squeeze(-1) if c == 1 else x, mode),
                             self.size, self.channels or c, notes) for x in batch]), [], notes


@dataclass
class FileLoader:
    """Decodes image files (any format Pillow reads) to (size, size, channels) uint8.

    The files are plain paths, or members of an uncompressed .tar (read at their byte offsets)
    or of a .zip, named by `archive`; either way any worker can read any image directly.
    """
    paths: list[str]                       # file paths, or member names inside `archive`
    size: int
    channels: int
    archive: Optional[Path] = None         # .tar or .zip holding the members
    offsets: Optional[np.ndarray] = None   # .tar: (N, 2) data offset and size of each member
    _handle: object = field(default=None, repr=False, compare=False)
    _pid: int = field(default=0, repr=False, compare=False)

    def _read(self, i: int) -> bytes:
        if self.archive is None:
            return Path(self.paths[i]).read_bytes()
        if self._pid != os.getpid():       # a forked worker must not share the parent's file offset
            import zipfile
            self._handle = (open(self.archive, "rb") if self.offsets is not None
                            else zipfile.ZipFile(self.archive))
            self._pid = os.getpid()
        if self.offsets is None:
            return self._handle.read(self.paths[i])
        offset, size = self.offsets[i]
        self._handle.seek(offset)
        return self._handle.read(size)

    def __getstate__(self) -> dict:   # spawn/forkserver workers: send no open file handle
        return {**self.__dict__, "_handle": None, "_pid": 0}

    def __call__(self, idx: np.ndarray) -> Loaded:
        from PIL import Image, UnidentifiedImageError
        images, bad, notes = [], [], Counter()
        for i in idx:
            try:
                with Image.open(io.BytesIO(self._read(i))) as img:
                    images.append(to_square_array(img, self.size, self.channels, notes))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                where = f"{self.archive}:{self.paths[i]}" if self.archive else self.paths[i]
                why = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else e
                bad.append((int(i), f"{where}: {why}"))
        empty = np.empty((0, self.size, self.size, self.channels), np.uint8)
        return (np.stack(images) if images else empty), bad, notes


def image_items(paths: list, labels: list[int], size: int, channels: int, **where) -> Items:
    """Items over image files, or over members of an archive (where = archive=..., offsets=...)."""
    return Items(np.asarray(labels, dtype=np.int64), FileLoader([str(p) for p in paths], size, channels, **where),
                 (size, size, channels), parallel=True)


def array_items(images: np.ndarray, labels: np.ndarray, cfg: dict, **extra) -> Items:
    """Items over an in-memory array; the data set's image_size/channels params resize it."""
    h, w, c = images.shape[1:]
    size, channels = cfg.get("image_size"), cfg.get("channels", c)
    shape = (size, size, channels) if size else (h, w, channels)
    return Items(np.asarray(labels, dtype=np.int64), ArrayLoader(images, size, channels), shape,
                 extra_labels=extra)
