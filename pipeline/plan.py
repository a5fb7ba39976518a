"""What each tool would run, and Snakemake's take-over of what DVC restored.

Snakemake goes by dates: a job runs when an output is missing, an input is newer than an output,
or a job it reads from runs. DVC goes by content: a stage runs when its command, params, inputs or
outputs differ from what dvc.lock records, or a stage it reads from runs. `dvc checkout`, `dvc
pull` and `dvc exp apply` restore files by content, each dated as copied, in no order (and `git
checkout` dates what it writes likewise), so Snakemake alone would rerun jobs whose outputs are
exactly what their inputs give. When the Snakefile is parsed (after configure), take_over_from_dvc
walks the jobs in order (wiring.jobs: each after those it reads from): a job with an input newer
than an output, which DVC records as current, gets its outputs dated now, and its readers are
checked in turn. An input only Snakemake declares (a parent's checkpoint) must also be the one the
outputs' run.json names (`parent_sha256`). Every other job keeps its dates, so Snakemake reruns
what it always did; where no job is out of date order, DVC is not even read.

The same walk, on files as configure is about to leave them and dating nothing, is the preview
(`python -m pipeline.wiring --preview`): what `snakemake` would run, and what `dvc repro` would.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path

from pipeline.stage import file_sha256


def snakemake_mtime(path: Path) -> float | None:
    """The time Snakemake dates `path` by (snakemake.io's rule): a folder by the .snakemake_timestamp
    inside where it has one, a link by the later of itself and its target; None where missing."""
    def own(p: Path, st: os.stat_result) -> float:
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                return os.stat(p / ".snakemake_timestamp").st_mtime
        return st.st_mtime
    try:
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return max(st.st_mtime, own(path, os.stat(path)))
        return own(path, st)
    except FileNotFoundError:
        return None


def _made_from(writes: list[Path], parent: Path) -> bool:
    """Whether every run.json among or under `writes` (a train job's, a replicate job's runs')
    records `parent`'s checkpoint as the one it started from (run.json's parent_sha256)."""
    records = [w for w in writes if w.name == "run.json"] + [r for w in writes if w.is_dir() for r in w.glob("*/run.json")]
    digest = file_sha256(parent) if parent.is_file() else None
    return bool(records) and all(json.loads(r.read_text()).get("parent_sha256") == digest for r in records)


class DvcRecord:
    """DVC's record of the workspace (dvc.lock), stage by stage, read through DVC's own API with its
    repository lock counted as held: the Snakefile's process holds it (lock.hold_workspace), and a
    preview only reads."""

    def __init__(self, root: Path):
        from dvc.lock import LockNoop
        from dvc.repo import Repo
        self.repo = Repo(str(root))
        self.repo.lock = LockNoop()
        self.repo.lock.lock()
        self.stages = {stage.name: stage for stage in self.repo.index.stages if not stage.is_data_source}

    def close(self) -> None:
        self.repo.close()       # its state database, before `dvc commit` (the hand-over) opens it

    def changed(self, name: str, future: dict[str, str | Path] | None = None) -> bool:
        """Whether DVC would run stage `name`, whatever runs before it: its command, params, inputs
        or outputs differ from dvc.lock, each input in `future` (path -> the text configure will
        write there, or a link's target) taken as configure will leave it."""
        stage, future = self.stages.get(name), future or {}
        if stage is None:
            return True
        for dep in stage.deps:
            if dep.def_path in future:
                text = future[dep.def_path]
                if not isinstance(text, str) or hashlib.md5(text.encode()).hexdigest() != dep.hash_info.value:
                    return True
        for entry in next(iter(stage.status().values()), []):
            if not (isinstance(entry, dict) and set(entry) == {"changed deps"} and set(entry["changed deps"]) <= set(future)):
                return True
        return False


def has_record(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.lock").is_file()


def walk(jobs: dict, root: Path = Path("."), future: dict[str, str | Path] | None = None,
         date: bool = False) -> tuple[list[str], list[str]]:
    """Snakemake's next run, job by job: (the jobs whose outputs the take-over dates, the jobs it
    runs). `future`: the files configure is about to write (path -> text or link target), dated
    then; None: as they are. With `date`, the take-over sets its dates on the files."""
    future, times, record = future or {}, {}, None
    written, dated = time.time() + 1, time.time() + 2       # configure's writes, then the take-over's

    def mtime(path: str) -> float | None:
        if path not in times:
            times[path] = written if path in future else snakemake_mtime(root / path)
        return times[path]
    taken, runs, run_writes = [], [], set()
    try:
        for name, job in jobs.items():
            outputs = [mtime(p) for p in job.writes]
            if job.reads & run_writes or not outputs or None in outputs:   # updated by another job, or missing
                runs.append(name)
                run_writes |= job.writes
                continue
            newer = {p for p in job.reads if (mtime(p) or 0) > min(outputs)}
            if not newer:
                continue
            if has_record(root):
                record = record or DvcRecord(root)
                if not record.changed(name, future) and not (
                        job.parent in newer and not _made_from([root / w for w in job.writes], root / job.parent)):
                    for path in job.writes:
                        times[path] = dated
                        for p in (root / path, root / path / ".snakemake_timestamp"):
                            if date and p.exists():
                                os.utime(p)
                    taken.append(name)
                    continue
            runs.append(name)
            run_writes |= job.writes
    finally:
        if record is not None:
            record.close()
    return taken, runs


def take_over_from_dvc(jobs: dict, root: Path = Path(".")) -> list[str]:
    """Date now the outputs of each job Snakemake would rerun only for its dates where DVC records
    it as current; return those jobs. Called where this process holds DVC's lock."""
    return walk(jobs, root, date=True)[0] if has_record(root) else []


def dvc_runs(jobs: dict, root: Path = Path("."), future: dict[str, str | Path] | None = None) -> list[str]:
    """The stages `dvc repro` would run (some it may restore from its run-cache instead): configure
    where its record differs, then each stage whose record differs once configure wrote `future`, or
    that reads what a stage before it runs. DVC sees no parent's checkpoint (its config carries the
    parent's instead)."""
    with contextlib.closing(DvcRecord(root)) as record:
        runs = ["configure"] if record.changed("configure") else []
        run_writes: set[str] = set()
        for name, job in jobs.items():
            if (job.reads - {job.parent}) & run_writes or record.changed(name, future):
                runs.append(name)
                run_writes |= job.writes
    return runs
