"""Published archives: find them locally (or download them), verify their md5, extract them safely.

Archives live in a downloads directory, never inside data/raw/<ds> (the download stage rebuilds
that folder from scratch, so a file there would be deleted). The directory is, first found:
    source.archive_dir in params.yaml   (relative to the project)
    $PIPELINE_DOWNLOADS                 (environment variable)
    data/downloads/                     (default)
An archive there is used without any network once its md5 passes; a wrong md5 is an error.
A user's own mirror with different bytes sets `source.md5` (and `source.url`) explicitly.
"""
from __future__ import annotations

import contextlib
import logging
import lzma
import os
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from tqdm import tqdm

from pipeline.stage import PipelineError

log = logging.getLogger("pipeline.sources")
DOWNLOADS_ENV = "PIPELINE_DOWNLOADS"
DEFAULT_DOWNLOADS = Path("data/downloads")


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    md5: str

    def for_source(self, cfg: dict) -> "Archive":
        """The published archive, with the user's mirror url / md5 overrides applied."""
        return Archive(cfg.get("url", self.url), self.filename, cfg.get("md5", self.md5))


def downloads_dir(cfg: dict) -> Path:
    """Where published archives are looked for and downloaded to. A source.archive_dir, or the
    folder $PIPELINE_DOWNLOADS names, must exist (the user's folder: never created, wherever a typo
    points); data/downloads/, the project's own, is made when a download needs it."""
    if "archive_dir" in cfg:
        folder = Path(cfg["archive_dir"]).expanduser()
        if not folder.is_dir():
            raise PipelineError(f"source.archive_dir {cfg['archive_dir']!r}: {folder.resolve()} is not a directory; "
                                f"create it and put the archive there, or remove source.archive_dir to use "
                                f"{DEFAULT_DOWNLOADS}/")
        return folder
    if os.environ.get(DOWNLOADS_ENV):
        folder = Path(os.environ[DOWNLOADS_ENV]).expanduser()
        if not folder.is_dir():
            raise PipelineError(f"${DOWNLOADS_ENV} {os.environ[DOWNLOADS_ENV]!r}: {folder.resolve()} is not a directory; "
                                f"create it and put the archive there, or unset {DOWNLOADS_ENV} to use "
                                f"{DEFAULT_DOWNLOADS}/")
        return folder
    return DEFAULT_DOWNLOADS


MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")   # zip, gzip, bzip2, xz


def is_archive(path: Path) -> bool:
    """Whether the file starts like a zip, a (compressed) tar: a damaged one included, which the
    readers then refuse as corrupt, unlike a file that is no archive at all."""
    with open(path, "rb") as f:
        head = f.read(512)
    return head.startswith(MAGIC) or head[257:262] == b"ustar" or zipfile.is_zipfile(path)


def _md5(path: Path) -> str:
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def verify(path: Path, md5: str | None, key: str | None = "source.md5") -> None:
    """Raise unless `path` has the expected md5 (None: nothing to check against). `key`: the
    params key that pins it, for a file of the user's own; None for a published archive, whose
    checksum is the publisher's and never to be replaced by whatever the file now has."""
    if md5 is None:
        return
    actual = _md5(path)
    if actual != md5:
        fix = (f"; if it is your own file and you trust it, set {key}: {actual} in params.yaml" if key else
               " (the published file's checksum; a changed copy is not that data set)")
        raise PipelineError(
            f"wrong checksum: {path} has md5 {actual}, expected {md5}. The file is corrupt, truncated or a "
            f"different file: delete it and fetch it again{fix}")


def obtain(archive: Archive, cfg: dict) -> Path:
    """Path of the verified archive in the downloads directory, downloading it if missing."""
    folder = downloads_dir(cfg)
    path = folder / archive.filename
    if not path.is_file():
        _download(archive, folder)
    verify(path, archive.md5, key="source.md5" if "md5" in cfg else None)   # pinned by the user: a mirror
    log.info("using %s (md5 %s verified)", path, archive.md5)
    return path


def _download(archive: Archive, folder: Path) -> None:
    from torchvision.datasets.utils import download_url
    folder.mkdir(parents=True, exist_ok=True)
    log.info("%s not found in %s; downloading %s", archive.filename, folder, archive.url)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:  # no half file left behind
        try:
            download_url(archive.url, tmp, archive.filename, archive.md5)
        except Exception as e:  # URLError, OSError, torchvision's RuntimeError on a bad download
            raise PipelineError(
                f"cannot download {archive.url} ({type(e).__name__}: {e}). Download it elsewhere and put "
                f"it at {folder.resolve() / archive.filename} (file name {archive.filename}, md5 "
                f"{archive.md5}); or name another directory with source.archive_dir in params.yaml or "
                f"${DOWNLOADS_ENV}") from None
        os.replace(Path(tmp) / archive.filename, folder / archive.filename)


class _StrictHeader(tarfile.TarInfo):
    """A tar header that is damaged, cut short or missing is an error wherever it is: tarfile
    takes one after the first member for the end of the archive, silently dropping every member
    after it. Only a block of zeros (EOFHeaderError) ends the archive."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as e:   # bad checksum, truncated block, no end-of-archive marker
            raise tarfile.ReadError(f"damaged tar header ({e}): the archive is cut or corrupt there") from None


@contextlib.contextmanager
def read_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """A (compressed) tar opened for reading every member in order. Once the block is done with
    it, the stream is read to its end: nothing but zeros may follow the end-of-archive marker, and
    the decompressor checks its own checksums there (gzip's CRC-32 and length, bzip2's and xz's
    checks), which catch a flipped byte in the compressed data."""
    with tarfile.open(path, tarinfo=_StrictHeader) as tar:
        yield tar
        tar.getmembers()                      # (the block may have stopped iterating early)
        while chunk := tar.fileobj.read(1 << 20):
            if chunk.strip(b"\0"):
                raise tarfile.ReadError("data after the end-of-archive marker (two archives joined?)")


def extract(path: Path, dest: Path) -> None:
    """Extract a .tar[.gz|.bz2|.xz]/.tgz or .zip into dest, refusing members that escape it."""
    _guarded(path, lambda: _extract_zip(path, dest) if zipfile.is_zipfile(path) else _extract_tar(path, dest))


def _guarded(path: Path, work) -> None:
    """Run work(); a damaged archive becomes one clear error."""
    try:
        work()
    except PipelineError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as e:
        why = " ".join(str(e).split())   # tarfile lists every method it tried, one per line
        raise PipelineError(f"corrupt or truncated archive {path} ({type(e).__name__}: {why}); "
                            f"delete it and fetch it again") from None


def repack_tar(path: Path, dest: Path) -> None:
    """Copy the safe members of a (compressed) tar into an uncompressed tar, where every image can
    be read at its offset by any worker: one file instead of thousands, decompressed once."""
    def work():
        with read_tar(path) as src, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
            for member in tqdm(src, desc=f"unpack {path.name}", unit="file", mininterval=1):
                _check_tar_member(path, member, dest.parent)
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
    _guarded(path, work)


def check_zip(path: Path) -> None:
    """Refuse unsafe member names and links, and corrupt data (CRCs), without extracting."""
    def work():
        with zipfile.ZipFile(path) as zf:
            _check_zip_names(path, zf.infolist())
            broken = zf.testzip()
            if broken:
                raise zipfile.BadZipFile(f"bad CRC in member {broken}")
    _guarded(path, work)


def _refuse(path: Path, member: str, why: str) -> None:
    raise PipelineError(f"unsafe archive {path}: member {member!r} {why}; refusing to extract it. "
                        f"Use an archive whose members are plain files under relative paths")


def _escapes(name: str) -> bool:
    """Absolute (/x, C:x) or climbing (../x) member names; the data filter would merely strip the /."""
    parts = PurePosixPath(name.replace("\\", "/"))
    return parts.is_absolute() or ".." in parts.parts or bool(parts.parts and ":" in parts.parts[0])


def _check_tar_member(path: Path, member: tarfile.TarInfo, dest: Path) -> None:
    if _escapes(member.name):
        _refuse(path, member.name, "escapes the target directory")
    if member.issym() or member.islnk():
        _refuse(path, member.name, f"is a link (to {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        _refuse(path, member.name, "is not a plain file or directory")
    try:   # the "data" filter also refuses odd permissions and anything else outside dest
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as e:
        _refuse(path, member.name, f"is unsafe ({e})")


def _extract_tar(path: Path, dest: Path) -> None:
    with read_tar(path) as tar:
        for member in tqdm(tar, desc=f"extract {path.name}", unit="file", mininterval=1):
            _check_tar_member(path, member, dest)
            tar.extract(member, dest, filter="data")


def _check_zip_names(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        if _escapes(info.filename):
            _refuse(path, info.filename, "escapes the target directory")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            _refuse(path, info.filename, "is a symbolic link")


def _extract_zip(path: Path, dest: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        _check_zip_names(path, infos)
        for info in tqdm(infos, desc=f"extract {path.name}", unit="file", mininterval=1):
            zf.extract(info, dest)   # a CRC mismatch (corrupt data) raises BadZipFile here


class Members:
    """Read-only view of the files in a .zip (read in place) or an uncompressed .tar (by offset).

    Lets a source read its annotation files and hand image members to prepare's workers
    without extracting thousands of files.
    """

    def __init__(self, path: Path, label: str | Path | None = None):
        self.path = Path(path)
        self.label = label or self.path       # the archive the messages name
        self.is_zip = zipfile.is_zipfile(self.path)
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                self.index = {i.filename: None for i in zf.infolist() if not i.is_dir()}
        else:
            with tarfile.open(self.path) as tar:
                self.index = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def read_text(self, name: str) -> str:
        if name not in self.index:
            raise PipelineError(f"{self.label} has no member {name}: not the expected archive; fetch it again")
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(name).decode()
        offset, size = self.index[name]
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size).decode()

    def loader_args(self, names: list[str]) -> dict:
        """FileLoader keyword arguments to read these members (missing ones are an error)."""
        missing = [n for n in names if n not in self.index]
        if missing:
            raise PipelineError(f"{self.label} lacks {len(missing)} listed image(s), e.g. {missing[0]}; "
                                f"the archive is incomplete: fetch it again")
        if self.is_zip:
            return {"archive": self.path}
        import numpy as np
        return {"archive": self.path, "offsets": np.array([self.index[n] for n in names], np.int64)}
