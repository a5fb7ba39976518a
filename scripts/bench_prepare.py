"""Benchmark download -> prepare -> stats of one data set: wall time and peak memory per stage.

    .venv/bin/python scripts/bench_prepare.py --dataset cifar10_jpeg [--study seed] [--workers N]

Runs the real stage CLIs (from the project root, so relative source paths resolve as in the
pipeline) on a copy of params.yaml with the chosen study's data sets added, writing into a temporary
directory (never the project's data/). Peak memory is the largest sum of RSS over the stage's
process and its decoding workers, sampled every 50 ms with psutil. The load average is printed
before and after, since the machine's cores may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.params import read_yaml  # noqa: E402  (read as every stage reads YAML)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak summed RSS bytes) of a command and its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    err = proc.stderr.read()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10_jpeg")
    ap.add_argument("--study", default="seed", help="the study (studies/<name>.yaml) holding the data set")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    study = read_yaml(ROOT / "studies" / f"{args.study}.yaml")
    cfg = study["datasets"][args.dataset]
    py = sys.executable
    print(f"cores {len(os.sched_getaffinity(0))}, load average before {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "source.json").write_text(json.dumps(cfg["source"]))
        (tmp / "dataset.json").write_text(json.dumps(cfg))
        raw, prep, stats = tmp / "raw", tmp / "prepared", tmp / "stats.json"
        results = {
            "download": measure([py, "-m", "pipeline.download", "--config", str(tmp / "source.json"),
                                 "--source", str(ROOT / cfg["source"]["path"] if cfg["source"]["kind"] == "folder"
                                                 else tmp / "source.json"), "--out", str(raw)]),
            "prepare": measure([py, "-m", "pipeline.prepare", "--config", str(tmp / "dataset.json"),
                                "--raw", str(raw), "--out", str(prep), "--workers", str(args.workers)]),
            "stats": measure([py, "-m", "pipeline.stats", "--prepared", str(prep), "--out", str(stats)]),
        }
        meta = json.loads((prep / "meta.json").read_text())
        result = json.loads(stats.read_text())
        from pipeline.stats import channel_stats    # all official training images: train + val
        everything = channel_stats(np.concatenate([np.load(prep / f"{s}_images.npy") for s in ("train", "val")]))
    print(f"load average after {os.getloadavg()}")
    for stage, (wall, peak) in results.items():
        print(f"{stage:9s} wall {wall:6.1f} s   peak RSS (process + workers) {peak / 2**20:7.0f} MiB")
    print(f"counts {meta['counts']}, image {meta['image_size']}x{meta['channels']}")
    print("mean", [round(x, 4) for x in result["mean"]], "std", [round(x, 4) for x in result["std"]],
          f"over {result['images']} training images (the train split)")
    print("mean", [round(x, 4) for x in everything["mean"]], "std", [round(x, 4) for x in everything["std"]],
          f"over {everything['images']} images (train + val: every official training image)")


if __name__ == "__main__":
    main()
