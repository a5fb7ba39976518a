"""GPU assignment when several jobs share a multi-GPU machine, on the CPU with a faked device count:
each job holds a GPU of its own until it exits, and a waiting job gets the first one freed."""
from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from pipeline import gpus, inference

# A job: claim one of `count` GPUs, print its index, hold it until stdin closes.
JOB = ("import sys; from pipeline import gpus; i = gpus.claim(int(sys.argv[1]), wait_s=0.05, n=int(sys.argv[2])); "
       "print(i, flush=True); sys.stdin.read()")


def job(count: int, env: dict, n: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, str(count), str(n)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_concurrent_jobs_get_distinct_gpus_and_a_waiting_one_the_first_freed(tmp_path):
    env = {**os.environ, "PIPELINE_GPU_LOCKS": str(tmp_path)}
    a = job(2, env)
    a_gpu = int(a.stdout.readline())
    b = job(2, env)
    b_gpu = int(b.stdout.readline())
    assert {a_gpu, b_gpu} == {0, 1}
    c = job(2, env)                                   # both GPUs held: c waits, printing nothing
    assert select.select([c.stdout], [], [], 2.0)[0] == [] and c.poll() is None
    a.stdin.close()                                   # a exits; the kernel drops its lock
    a.wait(timeout=30)
    assert int(c.stdout.readline()) == a_gpu
    for p in (b, c):
        p.stdin.close()
        p.wait(timeout=30)


def test_a_multi_gpu_job_claims_all_its_gpus_at_once_or_none(tmp_path):
    """devices: 2 on 3 GPUs: a second 2-GPU job waits holding nothing, so a 1-GPU job still gets
    the third; when the first ends, the waiting one gets its two."""
    env = {**os.environ, "PIPELINE_GPU_LOCKS": str(tmp_path)}
    first = job(3, env, n=2)
    assert first.stdout.readline().strip() == "[0, 1]"
    second = job(3, env, n=2)
    assert select.select([second.stdout], [], [], 1.5)[0] == []      # waits: only GPU 2 is free
    single = job(3, env)
    assert int(single.stdout.readline()) == 2                         # the waiting job held nothing
    first.stdin.close()
    first.wait(timeout=30)
    assert second.stdout.readline().strip() == "[0, 1]"
    for p in (second, single):
        p.stdin.close()
        p.wait(timeout=30)


def test_physical_ids_follow_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpus.physical_ids(2) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.physical_ids(3) == ["0", "1", "2"]
    # a job that sees GPUs 3 and 5 locks the physical ids: another job seeing only GPU 3 waits for it
    env = {**os.environ, "PIPELINE_GPU_LOCKS": str(tmp_path), "CUDA_VISIBLE_DEVICES": "3"}
    held = job(1, env)
    assert int(held.stdout.readline()) == 0 and (tmp_path / "gpu3.lock").exists()
    held.stdin.close()
    held.wait(timeout=30)


def test_device_auto_claims_a_gpu_only_when_there_are_several(monkeypatch):
    claims = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(gpus, "claim", lambda count, n=1: claims.append(count) or 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert inference.pick_device("auto") == torch.device("cuda", 2) and claims == [4]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert inference.pick_device("auto") == torch.device("cuda") and claims == [4]
    assert inference.pick_device("cpu") == torch.device("cpu")


def test_a_snakemake_train_job_takes_as_many_gpus_as_its_devices(project):
    """From the dry run's own job list: a train job takes its experiment's `devices` GPUs, an
    evaluate job one, the data stages none."""
    import re

    import yaml

    from conftest import run
    p = yaml.safe_load((project / "params.yaml").read_text())
    one, two = list(p["experiments"])[:2]
    p["experiments"][two]["devices"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = run(["snakemake", "-n", "--cores", "4", "--resources", "gpu=4"], cwd=project).stdout
    gpus = {}
    for job in re.split(r"\n(?=(?:local)?rule \w+:)", out)[1:]:   # one block per job
        rule = re.match(r"(?:local)?rule (\w+):", job)[1]
        wildcard = re.search(r"wildcards: \w+=(\w+)", job)
        gpu = re.search(r"resources: .*gpu=(\d+)", job)
        gpus[(rule, wildcard[1] if wildcard else None)] = int(gpu[1]) if gpu else 0
    assert gpus[("train", one)] == 1 and gpus[("train", two)] == 3
    assert gpus[("evaluate", two)] == 1 and gpus[("prepare", "digits")] == 0


def test_a_ddp_job_shows_its_ranks_only_the_gpus_it_claimed(monkeypatch, tmp_path):
    from pipeline import distributed
    from pipeline.stage import PipelineError
    launched = []

    class Finished:
        def __init__(self, cmd, env):
            launched.append((cmd, env))

        def wait(self):
            return 0

        def poll(self):
            return 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(gpus, "claim", lambda count, n=1: [1, 3])
    monkeypatch.setattr(subprocess, "Popen", Finished)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert distributed.relaunch(2, "pipeline.train", ["--config", "c.json"]) == 0
    cmd, env = launched[0]
    assert env["CUDA_VISIBLE_DEVICES"] == "5,7" and "--nproc-per-node=2" in cmd   # physical ids
    with pytest.raises(PipelineError, match="devices: 5 but this machine shows 4 GPU"):
        distributed.relaunch(5, "pipeline.train", [])
