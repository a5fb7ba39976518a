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


def claim(count: int, wait_s: float = 1.0, n: int = 1) -> int | list[int]:
    """The index (as torch numbers them, 0..count-1) of a GPU this process now holds alone; with
    `n` > 1 (one experiment on several GPUs), a list of n such indices.

    Waits while too few GPUs are free (with --resources gpu=K on a K-GPU machine enough always are;
    the wait covers other users of the same lock folder). It never holds some while waiting for
    more, so two jobs cannot each hold half of what the other needs."""
    if _held:
        held = sorted(_held)
        return held if n > 1 else held[0]
    if n > count:
        raise ValueError(f"{n} GPUs asked for but {count} visible")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ids, announced = physical_ids(count), False
    while True:
        got = {}
        for index, gpu in enumerate(ids):
            f = open(folder / f"gpu{gpu}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            got[index] = f
            if len(got) == n:
                break
        if len(got) == n:
            for index, f in got.items():
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                log.info("using GPU %s (cuda:%d of %d visible; lock %s)", ids[index], index, count, f.name)
            _held.update(got)
            return sorted(got) if n > 1 else next(iter(got))
        for f in got.values():       # too few free: hold none while waiting
            f.close()
        if not announced:
            log.warning("fewer than %d of the %d GPUs are free of other jobs (locks in %s); waiting", n, count, folder)
            announced = True
        time.sleep(wait_s)
