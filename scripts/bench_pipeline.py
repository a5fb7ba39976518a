"""Wall times of the README demo (Snakemake's includes its hand-over to DVC), of no-op reruns
with each tool, also over the other tool's outputs, and of a DVC experiment restored from the
run-cache, in fresh copies; and what planning costs at scale.

    python scripts/bench_pipeline.py [--keep DIR]          (or: make bench)
    python scripts/bench_pipeline.py --scale 100 1000 --out benchmarks/bench_scale.json

Prints one line per measurement. The copies hold the project's files (no data, no results); they
are deleted afterwards unless --keep names a folder to leave them in.

--scale N: a study of N small mlp experiments on the digits (params.yaml's defaults, each its own
lr), nothing run yet. Measured, as CPU seconds (user + sys of the command and its children), so
that the machine's load matters less than on a wall clock: `snakemake -n` (parse, configure's
config files, planning every job) and `dvc status` (parsing dvc.yaml's foreach, every stage's
dependencies), each twice (the first writes results/configs/, the second finds it current), with
the jobs each plans.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from conftest import copy_project, tool_env  # noqa: E402


def machine() -> dict:
    import os
    import platform
    return {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "platform": platform.platform()}


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


def cpu_seconds(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """(user + sys CPU seconds of cmd and its children, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, cwd=cwd, env=tool_env(), check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2), out


def scaled_study(project: Path, n: int) -> None:
    """params.yaml with the digits data set alone and n small mlp experiments on it."""
    from ruamel.yaml import YAML
    from pipeline import params
    p = params.read_yaml(project / "params.yaml")
    p["datasets"] = {"digits": p["datasets"]["digits"]}
    p["experiments"] = {f"mlp_{i:04d}": {"dataset": "digits", "model": {"name": "mlp", "hidden": [16]},
                                        "lr": round(0.01 + i * 1e-5, 5)} for i in range(n)}
    p["replicates"] = {}                  # each runs once: no replicate job
    params.validate(p)
    YAML(typ="safe", pure=True).dump(p, project / "params.yaml")


def measure_scale(root: Path, n: int) -> dict:
    project = copy_project(root / f"scale_{n}")
    scaled_study(project, n)
    row = {"experiments": n}
    for attempt in ("first", "again"):
        seconds, out = cpu_seconds(["snakemake", "-n"], project)
        row[f"snakemake_n_cpu_s_{attempt}"] = seconds
        row["snakemake_jobs"] = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("total "))
    for attempt in ("first", "again"):
        seconds, out = cpu_seconds(["dvc", "status"], project)
        row[f"dvc_status_cpu_s_{attempt}"] = seconds
        row["dvc_stages_listed"] = sum(1 for line in out.splitlines() if line and not line.startswith(("\t", " ")))
    row["takeover_walk_cpu_s"] = takeover_walk(project)
    return row


def takeover_walk(project: Path) -> float:
    """CPU seconds of what the Snakefile adds to each parse for the take-over of DVC's restores
    (pipeline/plan.py): the jobs listed and every input and output dated, here with every output
    present (a stand-in file or folder) and after its inputs, as in a no-op run."""
    from pipeline import params, plan, wiring
    study = params.load(project / "params.yaml")
    for job in wiring.jobs(study).values():                 # in job order: each written after what it reads
        for path in sorted(job.writes):
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.mkdir() if "." not in target.name else target.touch()
    start = time.process_time()
    taken, runs = plan.walk(wiring.jobs(study), project)
    seconds = time.process_time() - start
    assert not taken and not runs, (taken[:3], runs[:3])
    return round(seconds, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="leave the two project copies in this (new) folder")
    ap.add_argument("--scale", type=int, nargs="+", help="instead: plan studies of these many experiments")
    ap.add_argument("--out", type=Path, help="with --scale: write the figures to this JSON file")
    args = ap.parse_args()
    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [measure_scale(Path(tmp), n) for n in args.scale]
        for row in rows:
            print(json.dumps(row))
        if args.out:
            code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parents[1],
                                  capture_output=True, text=True).stdout.strip()
            args.out.write_text(json.dumps({"code": code, "rows": rows, "machine": machine()}, indent=1) + "\n")
        return
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
