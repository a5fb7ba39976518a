"""Snakemake on SLURM, for real: a one-node cluster on this machine (scripts/slurm_local.sh:
Debian's slurm-wlm with munge and slurmdbd), a two-experiment study run end to end through
profiles/slurm, `sacct` asked which jobs ran, and the results compared with a local run's.

Skipped, with the reason, only where SLURM cannot be installed (not root, or no apt-get).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, copy_project, run, tool_env
from test_pipeline import edit_params
from pipeline import live

pytestmark = pytest.mark.integration
EXPERIMENTS = ("digits_mlp", "digits_lenet")
# The test cluster has no GPUs: the profile's GPU requests are turned off, as its comment says.
SLURM_ARGS = ["--workflow-profile", "profiles/slurm", "--set-resources", "train:gpu=0", "evaluate:gpu=0", "replicate:gpu=0",
              "--default-resources", "slurm_partition=debug", "slurm_account=root", "mem_mb=1000", "runtime=10",
              "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "4"]


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("SLURM cannot be installed here: scripts/slurm_local.sh needs root and apt-get")
    p = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh")], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"scripts/slurm_local.sh failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


def two_experiments(project: Path) -> Path:
    def trim(doc):
        doc["epochs"] = 2
        for name in [e for e in doc["experiments"] if e not in EXPERIMENTS]:
            del doc["experiments"][name]
        doc["replicates"] = {EXPERIMENTS[0]: 2}      # one replicate job, for the first only
    edit_params(project, trim)
    return project


def results(project: Path) -> dict:
    """What a run produced that must not depend on where it ran (train time aside)."""
    out = {}
    for exp in EXPERIMENTS:
        d = project / "results" / "experiments" / exp
        train = json.loads((d / "train.json").read_text())
        train.pop("train_time_s")
        out[exp] = {"train": train, "test": json.loads((d / "test.json").read_text()),
                    "history": live.read_history(d / "live").to_dict("list")}
    out["replicate 1"] = json.loads((project / "results/experiments" / EXPERIMENTS[0] / "replicates/1/test.json").read_text())
    return out


def test_the_study_runs_under_slurm_as_it_runs_locally(cluster, tmp_path):
    local = two_experiments(copy_project(tmp_path / "local"))
    remote = two_experiments(copy_project(tmp_path / "slurm"))
    started = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    # the local reference runs meanwhile: the SLURM run mostly waits for sbatch and status checks
    reference = subprocess.Popen(["snakemake", "--cores", "1"], cwd=local, env=tool_env(), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run(["snakemake", *SLURM_ARGS], cwd=remote)
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]
    # sacct: every job of the study ran under SLURM and completed (the plugin's comment names its rule
    # and wildcards; slurm_local.sh stores comments)
    acct = run(["sacct", "-X", "-n", "-P", "--starttime", started, "--format=JobID,Comment,State,WorkDir"],
               cwd=remote).stdout.splitlines()
    mine = [line.split("|") for line in acct if line.split("|")[3].startswith(str(remote))]
    jobs = sorted(comment for _, comment, _, _ in mine)
    assert jobs == sorted([f"rule_{r}_wildcards_digits" for r in ("download", "prepare", "stats")] + ["rule_report"]
                          + [f"rule_{r}_wildcards_{e}" for r in ("train", "evaluate") for e in EXPERIMENTS]
                          + [f"rule_replicate_wildcards_{EXPERIMENTS[0]}"]), acct
    assert {state for *_, state, _ in mine} == {"COMPLETED"}
    logs = list((remote / ".snakemake" / "slurm_logs" / "rule_train").glob("*/*.log"))   # <wildcards>/<jobid>.log
    assert len(logs) == len(EXPERIMENTS)                      # a log per job
    # the same numbers as the local run (CPU runs repeat bit for bit)
    assert results(remote) == results(local)
    assert (remote / "results" / "report.html").is_file()
