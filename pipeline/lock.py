"""One workspace, one orchestrator at a time: Snakemake holds DVC's own repository lock; and the
hand-over from Snakemake to DVC after a run of the whole workflow (the other way: pipeline.plan).

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


def holder_of(lock: Path) -> str:
    """Who holds `lock` (an flock), in words: another Snakemake run, or DVC, with its pid and command,
    from the kernel's table of locks (Linux); where that cannot say, both are named."""
    try:
        st = os.stat(lock)
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pids = [int(f[4]) for f in (line.split() for line in Path("/proc/locks").read_text().splitlines())
                if len(f) > 5 and f[1] == "FLOCK" and f[5] == device and int(f[4]) > 0]
        cmd = Path(f"/proc/{pids[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (OSError, IndexError, ValueError):
        return f"DVC or another snakemake is running in this workspace ({lock} is held)"
    tool = "another snakemake" if any(Path(w).name.startswith("snakemake") for w in cmd.split()) else "DVC"
    return f"{tool} is running in this workspace (pid {pids[0]}: {cmd}; {lock} is held)"


def hold_workspace(root: Path = Path(".")) -> None:
    """Take DVC's repository lock for this process, or raise naming the DVC command that runs."""
    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir() or _held:
        return
    (dvc_dir / "tmp").mkdir(exist_ok=True)
    path = dvc_dir / "tmp" / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise PipelineError(f"{holder_of(path)}; wait for it to finish, then run snakemake again") from None
    writers = dvc_writers(dvc_dir)   # DVC lets go of its lock while a stage's command runs
    if writers:
        os.close(fd)
        raise PipelineError(f"DVC is running a stage in this workspace ({'; '.join(writers)}); wait for it "
                            f"to finish, then run snakemake again")
    _held.append(fd)


def code_mtimes(root: Path = Path(".")) -> dict[str, int]:
    """Every file of the pipeline package (its code, schema and templates) -> mtime: a Snakemake run
    takes this when it begins, for the hand-over to see an edit made while it ran."""
    package = root / "pipeline"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(package.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def edited_during_run(code_at_start: dict[str, int], configs: Path, sources: Path,
                      params_path: Path = Path("params.yaml")) -> str | None:
    """Why the outputs of a run that began with `code_at_start` (and wrote `configs` from
    params.yaml) may not be recorded as current now, or None: params.yaml no longer resolves to
    exactly those configs, or a file of the code changed since it began."""
    from pipeline import params
    from pipeline.configure import changes
    try:
        write, remove = changes(params.load(params_path), configs, sources)
    except (params.ParamsError, PipelineError) as e:
        return f"{params_path} no longer reads ({e})"
    if write or remove:   # (named by a job's own config where one changed: study.json changes with any)
        first = sorted([*write, *remove], key=lambda path: path.name == "study.json")[0]
        return f"{params_path} or a folder source changed during the run ({first} would change)"
    code = code_mtimes(params_path.parent)
    edited = sorted(f for f in code_at_start.keys() | code.keys() if code_at_start.get(f) != code.get(f))
    return f"{edited[0]} was edited during the run" if edited else None


def hand_over_to_dvc(whole_workflow: bool, edited: str | None = None, root: Path = Path(".")) -> None:
    """After a successful Snakemake run: `dvc commit -f`, so that DVC records Snakemake's outputs as
    its own and `dvc repro` then runs nothing. The other way needs nothing: Snakemake takes outputs
    newer than their inputs as current, whoever made them. DVC's cache links by copy
    (`.dvc/config`), so the commit leaves every file, and its mtime, where it is (a hardlink or
    reflink cache would replace a file whose content it already held, and a file dated as the
    cache's copy looks older than its inputs to Snakemake's next run).

    Only after a run of the whole workflow (no targets, no --until/--omit-from), which leaves
    every output current: after a partial one DVC would record outputs Snakemake did not bring up
    to date. Nor where `edited` says why the outputs are not current (edited_during_run): DVC
    would record params or code the run did not use. Snakemake's
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
    if edited:
        print(f"not handed over to DVC: {edited}; DVC keeps its record of the run before, so run snakemake "
              f"again (it redoes what the edit changed, then hands over) or dvc repro", file=sys.stderr)
        return
    while _held:
        os.close(_held.pop())
    p = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet"], cwd=root,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"dvc commit -f failed (DVC will redo the work): {p.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)

