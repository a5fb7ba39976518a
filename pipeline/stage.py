"""What every stage shares: logging to terminal and file, one-line user errors, and
all-or-nothing outputs. Whether a stage needs to run at all is the orchestrators' business."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Iterator

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """Bad input a user can fix; the message names the cause and the fix."""


class Interrupted(Exception):
    """SIGTERM or SIGINT: unwinds the stage like an error, so temporaries and workers go."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}: nothing written")
        self.code = 128 + signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def cli(main, on_failure=None) -> None:
    """Run a stage's main(); a user error becomes one clear line on stderr and exit code 1.

    SIGTERM and SIGINT unwind the stage (temporary outputs removed, worker processes ended) and
    exit 128 + the signal's number; a missing file named on the command line is one line too.
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
    except Interrupted as e:
        _fail(str(e), code=e.code)
    except (PipelineError, ParamsError) as e:
        _fail(str(e), on_failure=on_failure)


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
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `final` only if the block succeeds.

    A failed or killed stage thus never leaves a half-written file or directory under the
    final name, which either orchestrator could take as finished.
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
        yield tmp
        if final.is_dir() and tmp.is_dir():
            _remove(final)
        os.replace(tmp, final)
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
def worker_pool(workers: int, **kwargs):
    """A ProcessPoolExecutor whose workers are ended at once (not waited for) when the block fails
    or the stage is interrupted."""
    from concurrent.futures import ProcessPoolExecutor
    pool = ProcessPoolExecutor(workers, **kwargs)
    try:
        yield pool
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
