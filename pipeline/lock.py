"""One workspace, one orchestrator at a time: Snakemake holds DVC's own repository lock; and the
hand-over from Snakemake to DVC after a run of the whole workflow.

`dvc repro` and `snakemake` in the same workspace would otherwise train the same experiment into the
same paths at once (each deletes a stage's outputs before running it). DVC already takes
`.dvc/tmp/lock` when it starts, and records the outputs its running stage writes in
`.dvc/tmp/rwlock`; the Snakefile's `onstart` takes that lock too and holds it until Snakemake
exits. So a `dvc` command started while Snakemake runs stops with DVC's "Unable to acquire lock",
and Snakemake started while DVC runs stops with the one line below.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from pipeline.stage import PipelineError, alive

_held: list[int] = []   # the open lock file, kept for the life of the Snakemake process


def dvc_writers(dvc_dir: Path) -> list[str]:
    """Commands of live DVC processes that hold write locks on outputs (a stage is running)."""
    try:
        record = json.loads((dvc_dir / "tmp" / "rwlock").read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return []
    return sorted({info["cmd"] for info in record.get("write", {}).values() if alive(info["pid"])})


def hold_workspace(root: Path = Path(".")) -> None:
    """Take DVC's repository lock for this process, or raise naming the DVC command that runs."""
    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir() or _held:
        return
    (dvc_dir / "tmp").mkdir(exist_ok=True)
    fd = os.open(dvc_dir / "tmp" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    busy = f"DVC is running in this workspace ({dvc_dir / 'tmp' / 'lock'} is held)"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise PipelineError(f"{busy}; wait for it to finish, then run snakemake again") from None
    writers = dvc_writers(dvc_dir)   # DVC lets go of its lock while a stage's command runs
    if writers:
        os.close(fd)
        raise PipelineError(f"DVC is running a stage in this workspace ({'; '.join(writers)}); wait for it "
                            f"to finish, then run snakemake again")
    _held.append(fd)


def hand_over_to_dvc(whole_workflow: bool, root: Path = Path(".")) -> None:
    """After a successful Snakemake run: `dvc commit -f`, so that DVC records Snakemake's outputs as
    its own and `dvc repro` then runs nothing. The other way needs nothing: Snakemake takes outputs
    newer than their inputs as current, whoever made them. DVC's cache links by copy
    (`.dvc/config`), so the commit leaves every file, and its mtime, where it is (a hardlink or
    reflink cache would replace a file whose content it already held, and a file dated as the
    cache's copy looks older than its inputs to Snakemake's next run).

    Only after a run of the whole workflow (no targets, no --until/--omit-from), which leaves
    every output current: after a partial one DVC would record outputs Snakemake did not bring up
    to date. Snakemake's
    lock is let go first (`dvc commit` takes it); a DVC command that slips in meanwhile makes the
    commit fail with one line, and the next `dvc repro` redoes the work instead."""
    import subprocess
    import sys
    if not (root / ".dvc").is_dir():
        return
    if not whole_workflow:
        print("snakemake ran part of the workflow: DVC has no record of it (a whole `snakemake`, "
              "or `dvc commit -f`, hands it over)", file=sys.stderr)
        return
    while _held:
        os.close(_held.pop())
    p = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet"], cwd=root,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"dvc commit -f failed (DVC will redo the work): {p.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)
