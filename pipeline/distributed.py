"""One experiment across several devices: PyTorch DDP, one process per device, launched by torchrun.

`devices: N` in an experiment makes the train stage relaunch itself under
`python -m torch.distributed.run --standalone --nproc-per-node N -m pipeline.train <same args>`,
so neither orchestrator's command changes. Every rank holds the whole prepared split and draws the
same shuffled order and the same per-sample augmentation for each global batch of `batch_size`,
then trains on its slice (`batch_size / N` images); DDP averages the gradients, which makes a step
the single-device step on the whole batch, but for BatchNorm's statistics (per slice) and the
order of float sums. Loss and accuracy are summed over the ranks once per epoch; each rank scores
its slice of the val split and the sums are reduced, so every rank has the same figures; rank 0
alone writes.
Backends: NCCL on CUDA (rank r on cuda:<LOCAL_RANK>), gloo on the CPU.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from pipeline import stage

log = logging.getLogger("pipeline.distributed")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Ranks:
    """This process's place, as torchrun's environment says (one process: rank 0 of 1)."""
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def relaunch(devices: int, module: str, argv: list[str], device: str = "auto") -> int:
    """Run `python -m <module> <argv>` as `devices` torchrun processes; their exit status.

    With `device: auto` on a machine with several GPUs, this process first claims `devices` GPUs no
    other job holds (pipeline/gpus.py) and shows the ranks only those (CUDA_VISIBLE_DEVICES).
    A signal to this process ends torchrun, which ends its workers."""
    from pipeline import gpus
    env = dict(os.environ)
    count = torch.cuda.device_count() if device == "auto" and torch.cuda.is_available() else 0
    if devices > count > 0:
        from pipeline.stage import PipelineError
        raise PipelineError(f"devices: {devices} but this machine shows {count} GPU(s); lower devices")
    if count > 1:
        ids = gpus.physical_ids(count)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[i] for i in gpus.claim(count, n=devices))
    # "--": torchrun's parser would otherwise take the stage's --log for an abbreviation of its own
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", module, "--", *argv]
    log.info("training on %d devices: %s", devices, " ".join(cmd))
    process = subprocess.Popen(cmd, env=env)
    try:
        with stage.on_signal(lambda: process.terminate()):   # torchrun then ends its ranks
            return process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def start(ranks: Ranks, device: torch.device) -> None:
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank,
                            world_size=ranks.world)


def stop(ranks: Ranks) -> None:
    import torch.distributed as dist
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """The model for the training step: DDP over the ranks (itself on one). `sync_batchnorm`: its
    BatchNorm layers become SyncBatchNorm, in place (the unwrapped model shares them), so that they
    normalise over the global batch; torch has that on CUDA only."""
    if ranks.world == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            from pipeline.stage import PipelineError
            raise PipelineError(f"sync_batchnorm: true needs CUDA (torch's SyncBatchNorm has no {device.type} "
                                f"forward); set sync_batchnorm: false to train on {ranks.world} {device.type} processes")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def part(n: int, ranks: Ranks) -> slice:
    """This rank's slice of n items, as tensor_split cuts them (sizes differ by at most one; may be empty)."""
    size, extra = divmod(n, ranks.world)
    start = ranks.rank * size + min(ranks.rank, extra)
    return slice(start, start + size + (ranks.rank < extra))


def shard(x: torch.Tensor, y: torch.Tensor, ranks: Ranks) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of a batch (see part)."""
    rows = part(len(y), ranks)
    return x[rows], y[rows]


def all_reduce(t: torch.Tensor, ranks: Ranks, op: str = "sum") -> torch.Tensor:
    """Sum (or max) of `t` over the ranks, in place; `t` itself on one process."""
    if ranks.world > 1:
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t
