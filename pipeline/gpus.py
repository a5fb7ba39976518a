"""Which GPU a job uses when several train/evaluate jobs share a machine with several GPUs.

`snakemake --resources gpu=K` (or `dvc queue start -j K`) runs up to K GPU jobs at once but tells
none of them which GPU is its own; left alone, every one would train on cuda:0. So `device: auto`
claims one: the first GPU no other job of this machine holds, by an exclusive `flock` on
<lock dir>/gpu<id>.lock, kept until the process exits (the kernel releases it even after
`kill -9`). Ids are physical: with CUDA_VISIBLE_DEVICES set (SLURM sets it per job) the job only
chooses among those, so jobs with different visible sets still never share a GPU.

    PIPELINE_GPU_LOCKS=/some/dir    where the lock files live (default: /tmp/pipeline-gpus-<uid>)
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("pipeline.gpus")
_held: dict[int, object] = {}   # index -> open lock file, alive as long as the process


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"pipeline-gpus-{os.getuid()}"
    return Path(os.environ.get("PIPELINE_GPU_LOCKS", default))


def physical_ids(count: int) -> list[str]:
    """The physical id of each of the `count` devices CUDA shows this process, in CUDA's order."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:count] if len(ids) >= count else [str(i) for i in range(count)]


def claim(count: int, wait_s: float = 1.0) -> int:
    """The index (as torch numbers them, 0..count-1) of a GPU this process now holds alone.

    Waits while every GPU is held by another job (with --resources gpu=K on a K-GPU machine one is
    always free; the wait covers other users of the same lock folder)."""
    if _held:
        return next(iter(_held))
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ids, announced = physical_ids(count), False
    while True:
        for index, gpu in enumerate(ids):
            f = open(folder / f"gpu{gpu}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            _held[index] = f
            log.info("using GPU %s (cuda:%d of %d visible; lock %s)", gpu, index, count, f.name)
            return index
        if not announced:
            log.warning("all %d GPUs are held by other jobs (locks in %s); waiting for one", count, folder)
            announced = True
        time.sleep(wait_s)
