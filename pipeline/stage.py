"""What every stage shares: logging to terminal and file, stamps, and all-or-nothing outputs.

Stamps let one orchestrator skip work the other has already done. Snakemake and DVC each keep
their own record of what ran, so after `dvc repro` a `snakemake` run (or the reverse) may call a
stage whose outputs are already current. The stage then finds a stamp beside its first output
whose key (stage, resolved config, input contents, pipeline code) and output digests still match,
and returns at once, before importing torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """Bad input a user can fix; the message names the cause and the fix."""


def cli(main) -> None:
    """Run a stage's main(); a user error becomes one clear line on stderr and exit code 1."""
    from pipeline.params import ParamsError
    try:
        main()
    except (PipelineError, ParamsError) as e:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (e,), None)
        for handler in logging.getLogger().handlers:     # the stage's log file says why it failed
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        print(f"error: {e}", file=sys.stderr)            # the terminal gets one line
        sys.exit(1)


CODE_DIR = Path(__file__).parent


def setup_logging(log_file: str | Path | None) -> None:
    """Log to stderr and, when given, to a per-stage log file (overwritten on each run)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def digest(path: str | Path) -> str:
    """Content digest of a file, or of a directory's relative paths and file contents.

    Hidden files are bookkeeping, not content (our stamps, Snakemake's .snakemake_timestamp).
    """
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                   ) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def code_digest() -> str:
    """Digest of the pipeline package's source, so a code change invalidates every stamp."""
    h = hashlib.sha256()
    for f in sorted(CODE_DIR.rglob("*")):
        if f.is_file() and f.suffix in {".py", ".yaml", ".j2", ".css", ".js"}:
            h.update(str(f.relative_to(CODE_DIR)).encode() + f.read_bytes())
    return h.hexdigest()


def _stamp_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.stamp.json")


def stamp_key(stage: str, config: object, inputs: Sequence[str | Path]) -> str:
    payload = {"stage": stage, "config": config, "code": code_digest(),
               "inputs": {str(p): digest(p) for p in inputs}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def is_current(key: str, outputs: Sequence[str | Path]) -> bool:
    """True if the outputs exist and are exactly what a run with this key produced."""
    stamp = _stamp_path(outputs[0])
    if not stamp.exists() or not all(Path(p).exists() for p in outputs):
        return False
    recorded = json.loads(stamp.read_text())
    return recorded.get("key") == key and recorded.get("outputs") == {
        str(p): digest(p) for p in outputs}


def write_stamp(key: str, outputs: Sequence[str | Path]) -> None:
    record = {"key": key, "outputs": {str(p): digest(p) for p in outputs}}
    with atomic_path(_stamp_path(outputs[0])) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `final` only if the block succeeds.

    A failed or killed stage thus never leaves a half-written file or directory under the
    final name, which either orchestrator could take as finished.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_stage(stage: str, config: object, inputs: Sequence[str | Path],
              outputs: Sequence[str | Path], work) -> None:
    """Run `work()` unless the outputs are current; then stamp them.

    `work` must write every output through `atomic_path`. Stale outputs and their stamp are
    removed first, so a failure leaves nothing behind that looks finished.
    """
    key = stamp_key(stage, config, inputs)
    if is_current(key, outputs):
        log.info("%s: %s is up to date (stamp matches), nothing to do", stage, outputs[0])
        return
    for p in [_stamp_path(outputs[0]), *map(Path, outputs)]:
        _remove(p)
    work()
    missing = [str(p) for p in outputs if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"{stage}: finished without writing {', '.join(missing)}")
    write_stamp(key, outputs)
