"""What every stage shares: its row (Stage: the declaration both tools are built from, and its
command line), logging to terminal and file, one-line user errors, and all-or-nothing outputs.
Whether a stage needs to run at all is the orchestrators' business."""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """Bad input a user can fix; the message names the cause and the fix."""


# ---- the row: a stage declared once (pipeline/wiring.py builds both tools from the rows) ------

@dataclass(frozen=True)
class Out:
    path: str
    kind: str = "out"          # out | metric (`dvc metrics`, `dvc exp show`) | live (a DVCLive folder
                               # (pipeline/live.py): its metrics.json metrics, its plot files `dvc plots`)
    directory: bool = False
    persist: bool = False      # DVC leaves it in place while the stage runs (and keeps no run-cache entry)
    report: str = ""           # the category it is shown under in Snakemake's own report (`snakemake
                               # --report`; an experiment's files in a subcategory of its name); "": not shown


@dataclass(frozen=True)
class Gather:
    """A dependency on every output of `stages` (for all experiments / data sets): DVC depends on
    the folder `path` that holds them, Snakemake on the files themselves."""
    path: str
    stages: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    name: str
    foreach: str | None                 # None (one job) | "datasets" | "experiments" | "replicates"
                                        # (the params.yaml mapping with one job per key)
    deps: dict[str, str | Gather]       # --option -> path the stage reads
    outs: dict[str, Out]                # --option -> path the stage writes
    args: dict[str, str] = field(default_factory=dict)   # other --option value pairs
    params: tuple[str, ...] = ()        # params files DVC tracks whole (only configure reads params.yaml)
    gpus: int | str = 0                 # the `gpu` resource a Snakemake job takes: a count, or "devices"
                                        # (the experiment's own); a job that takes any sets its threads too
    help: dict[str, str] = field(default_factory=dict)   # --option -> its --help line

    @property
    def module(self) -> str:
        return f"pipeline.{self.name}"

    @property
    def wildcard(self) -> str | None:
        """The name of the entry a job is for in path templates: ds, exp, or None (a single job)."""
        return {"datasets": "ds", "experiments": "exp", "replicates": "exp", None: None}[self.foreach]

    @property
    def key(self) -> str:
        """The path template of the entry a job is for: {ds}, {exp}, or "" (a single job)."""
        return f"{{{self.wildcard}}}" if self.wildcard else ""

    @property
    def log(self) -> str:
        return f"logs/{self.name}/{self.key}.log" if self.key else f"logs/{self.name}.log"

    def parser(self, description: str | None) -> argparse.ArgumentParser:
        """The stage's command line, from its row: every dependency and output a required
        `--<option> <path>`, each argument an option with the row's value as its default, and
        `--log`. A module adds its own extra options to it."""
        ap = argparse.ArgumentParser(prog=f"python -m {self.module}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        for opt in [*self.deps, *self.outs]:
            ap.add_argument(f"--{opt}", required=True, type=Path, help=self.help.get(opt))
        for opt, value in self.args.items():
            ap.add_argument(f"--{opt}", type=Path, default=Path(value),
                            help=" ".join(filter(None, [self.help.get(opt), f"(default: {value})"])))
        ap.add_argument("--log", type=Path, help="log file (as well as the terminal)")
        return ap


# Path templates of the rows: an experiment's folder, its data set's prepared folder.
EXP, DS = "results/experiments/{exp}", "data/prepared/{dataset}"


# What a signal must undo before the process ends, newest first: worker processes to end,
# temporaries to remove (see on_signal), and the outputs this stage already moved into place, so
# that a stopped stage leaves none of its outputs rather than some.
_UNDO: list = []
_MOVED: list[Path] = []


@contextlib.contextmanager
def on_signal(undo) -> Iterator[None]:
    """While the block runs, a SIGTERM or SIGINT calls `undo()` before the process exits."""
    _UNDO.append(undo)
    try:
        yield
    finally:
        _UNDO.remove(undo)


def _interrupt(signum, frame) -> None:
    """End the stage now: undo what is under way, one line, exit 128 + signum.

    Nothing is raised: an exception thrown from a signal handler lands wherever the main thread
    happens to be (a logging lock, a fork hook, concurrent.futures' shutdown), where it can be
    swallowed (exit 0) or wait forever on a worker that is gone. So the handler does the cleanup
    itself and leaves with os._exit, past every atexit hook and thread join. Outputs are only ever
    moved into place whole (atomic_path), and those already moved are removed here too, so the
    stage leaves all of its outputs or none."""
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)        # a second signal must not cut the cleanup short
    for undo in [*reversed(_UNDO), *(lambda path=path: _remove(path) for path in _MOVED)]:
        try:
            undo()
        except Exception:  # noqa: BLE001 - the rest of the cleanup matters more
            pass
    message = f"error: stopped by {signal.Signals(signum).name}: nothing written\n"
    for handler in logging.getLogger().handlers:  # no logging call: its locks may be held right now
        if isinstance(handler, logging.FileHandler):
            with contextlib.suppress(OSError):
                fd = os.open(handler.baseFilename, os.O_WRONLY | os.O_APPEND)
                os.write(fd, message.encode())
                os.close(fd)
    with contextlib.suppress(OSError):
        os.write(2, b"\n" + message.encode())       # on a line of its own, past a progress bar
    os._exit(128 + signum)


def cli(main, on_failure=None) -> None:
    """Run a stage's main(); a user error becomes one clear line on stderr and exit code 1.

    SIGTERM and SIGINT end the stage at once (worker processes ended, temporaries removed: see
    _interrupt) with exit 128 + the signal's number; a missing file named on the command line is
    one line too.
    `on_failure()` runs after the line is logged (train and evaluate render the report with the
    failure shown).
    """
    from pipeline.params import ParamsError
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        main()
    except FileNotFoundError as e:
        _fail(f"{e.filename}: no such file or directory; check the path on the command line, or run "
              f"the stage that writes it first", on_failure=on_failure)
    except PermissionError as e:
        _fail(f"{e.filename}: permission denied; make it (and its folder) writable by you, or run where you "
              f"can write")
    except OSError as e:
        if e.errno not in MACHINE_FAULTS:
            raise
        for path in _MOVED:      # the outputs already in place go too: all of them or none
            _remove(path)
        _fail(f"{e.filename or 'a file it wrote'}: {MACHINE_FAULTS[e.errno]}", on_failure=on_failure)
    except (PipelineError, ParamsError) as e:
        _fail(str(e), on_failure=on_failure)
    else:
        # Done: leave at once, outputs in place. A signal from here on is still this handler's (it
        # removes them: all or nothing); in the interpreter's own shutdown it would be the default
        # action, killing the process with its outputs written.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# Faults of the machine, not of the input: what the user sees, and what to do.
MACHINE_FAULTS = {
    errno.ENOSPC: "no space left on its file system (ENOSPC): nothing written; free space there (df -h shows "
                  "it) and run the stage again",
    errno.EDQUOT: "disk quota exceeded (EDQUOT): nothing written; free space within your quota (quota -s) and "
                  "run the stage again",
    errno.EROFS: "the file system is read-only (EROFS): nothing written; remount it read-write, or run where "
                 "results/ and data/ can be written",
    errno.EFBIG: "past the largest file this process may write (EFBIG: ulimit -f, or the file system's largest "
                 "file): nothing written; raise the limit (ulimit -f unlimited) and run the stage again",
}


def _fail(message: str, code: int = 1, on_failure=None) -> None:
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:     # the stage's log file says why it failed
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
    if on_failure is not None:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                        if isinstance(h, logging.FileHandler)]   # keep stderr to one line
        on_failure()
    print(f"error: {message}", file=sys.stderr)      # the terminal gets one line
    sys.exit(code)


def failure_report() -> None:
    """After a failed train, evaluate or replicate: render the report with the failure shown, as a process of
    its own (`python -m pipeline.report.failure`), for `dvc repro` has no onerror hook.
    A torchrun rank leaves it to the process that launched it."""
    import subprocess
    if "LOCAL_RANK" in os.environ:
        return
    logs = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    with open(logs[0] if logs else os.devnull, "a") as out:   # the terminal keeps its one line
        subprocess.run([sys.executable, "-m", "pipeline.report.failure"], stdout=out, stderr=out,
                       check=False)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    import hashlib
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_json(path: Path) -> dict:
    """A JSON input named on the command line; a missing one is a one-line error naming it."""
    import json
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file; run the stage that writes it first "
                            f"(configure writes results/configs/)") from None


def setup_logging(log_file: str | Path | None, append: bool = False) -> None:
    """Log to stderr and, when given, to a per-stage log file (overwritten on each run, unless
    `append`: a process the stage itself launched, e.g. torchrun's rank 0)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a" if append else "w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def atomic_path(final: str | Path, keep_if_stopped: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `final` only if the block succeeds.

    A failed or killed stage thus never leaves a half-written file or directory under the
    final name, which either orchestrator could take as finished; and a stage stopped by a
    signal removes what it had already moved into place, unless `keep_if_stopped` (a resumable
    state: kept on purpose).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):   # left by a killed run (kill -9)
        pid = stale.name.rsplit("-", 1)[1]
        if not pid.isdigit() or not alive(int(pid)):
            _remove(stale)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        with on_signal(lambda: _remove(tmp)):
            yield tmp
            if final.is_dir() and tmp.is_dir():
                _remove(final)
            os.replace(tmp, final)
            if not keep_if_stopped:
                _MOVED.append(final)
    except OSError as e:
        if e.filename is None or str(e.filename) == str(tmp):   # a write's own error names no file:
            e.filename = str(final)                               # the output it was for
        raise
    finally:
        _remove(tmp)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def worker_pool(workers: int, initializer=None, initargs=()):
    """A ProcessPoolExecutor whose workers are ended at once (not waited for) when the block fails
    or the stage is stopped by a signal, and die with this process even under kill -9."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    # fork, said outright (Python 3.14 defaults to forkserver): a worker's parent is this process
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_init_worker, initargs=(os.getpid(), initializer, initargs))

    def end_workers():
        for process in list((pool._processes or {}).values()):
            process.kill()
    try:
        with on_signal(end_workers):
            yield pool
    except BaseException:
        end_workers()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _init_worker(parent: int, initializer, initargs) -> None:
    """In each worker: die with the parent (Linux's parent-death signal, so a kill -9 of the stage
    leaves no worker behind), leave signals to the parent, then the pool's own initializer."""
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    if os.getppid() != parent:      # the parent died before the prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C reaches the whole group: the parent ends us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not the parent's handler, inherited by fork
    if initializer is not None:
        initializer(*initargs)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
