"""Wall times of the README demo (Snakemake's includes its hand-over to DVC), of no-op reruns
with each tool, also over the other tool's outputs, and of a DVC experiment restored from the
run-cache, in fresh copies.

    python scripts/bench_pipeline.py [--keep DIR]          (or: make bench)

Prints one line per measurement. The copies hold the project's files (no data, no results); they
are deleted afterwards unless --keep names a folder to leave them in.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import copy_project, tool_env  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=tool_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def measure(root: Path) -> list[tuple[str, float]]:
    a = copy_project(root / "snakemake_first")
    b = copy_project(root / "dvc_first")
    return [
        ("demo, snakemake (fresh copy; then dvc commit -f by itself)", timed(["snakemake"], a)),
        ("no-op, snakemake", timed(["snakemake"], a)),
        ("no-op, dvc repro over snakemake's outputs", timed(["dvc", "repro"], a)),
        ("demo, dvc repro (fresh copy)", timed(["dvc", "repro"], b)),
        ("no-op, dvc repro (its own outputs)", timed(["dvc", "repro"], b)),
        ("dvc exp run -S lr=0.02 (trains what inherits lr)", timed(["dvc", "exp", "run", "-S", "lr=0.02"], b)),
        ("dvc exp run -S lr=0.05 (back: all from the run-cache)", timed(["dvc", "exp", "run", "-S", "lr=0.05"], b)),
        ("no-op, snakemake over dvc's outputs", timed(["snakemake"], b)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="leave the two project copies in this (new) folder")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        rows = measure(args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = measure(Path(tmp))
    for name, seconds in rows:
        print(f"{seconds:8.1f} s  {name}")


if __name__ == "__main__":
    main()
