"""The whole seed study (and cifar10_local's experiments) end to end at smoke scale: every
experiment's code path (the official archive formats, Tiny ImageNet's relabelled val, CUB's course
split, ImageNet weights for the transfers, the resizes, every recipe, the ablation tables) runs
through Snakemake into the report, in a few minutes on a CPU.

Stand-ins, where this machine reaches no host: the official-format miniature archives in
data/downloads/ (with their checksums as a mirror's, `source.md5`), and random weights with
torchvision's exact keys in torchvision's cache layout under TORCH_HOME, so the real loading code runs.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_project, tool_env, unit_params
from pipeline import params as P

sys.path.insert(0, str(ROOT / "scripts"))
from smoke_workspace import edit_params, seed_smoke  # noqa: E402


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("seed_smoke")
    project = copy_project(root / "project")
    env = {**tool_env(), "TORCH_HOME": str(root / "torch")}
    params = seed_smoke(project, root, env)
    # One torch thread a job and two jobs at once (no GPU here: `gpu` only caps concurrency), not
    # one job on two threads: the smoke jobs are mostly process start-up, which threads do not
    # share, and an OpenMP thread spinning on a core the other test worker needs wastes it.
    edit_params(project, lambda doc: doc.__setitem__("threads", 1))
    params["threads"] = 1
    run = subprocess.run(["snakemake", "--cores", "2", "--resources", "gpu=2", "--keep-going"], cwd=project, env=env,
                         capture_output=True, text=True)
    return project, params, run


@pytest.mark.integration
def test_every_experiment_of_the_seed_study_trains_evaluates_and_reaches_the_report(smoke_run):
    project, params, run = smoke_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    names = list(params["experiments"])
    assert len(names) >= 29 and {"resnet50_birds_full", "tinynet", "cifarnet_best_jpeg"} <= set(names)
    for name in names:
        d = project / "results/experiments" / name
        test = json.loads((d / "test.json").read_text())
        run_record = json.loads((d / "run.json").read_text())
        assert 0 <= test["test_acc"] <= 1, name
        assert run_record["config"]["epochs"] == 1 and len(run_record["epoch_times_s"]) == 1, name
        # the close calls' further runs, cut to one at smoke scale: seed + 1, a finished run
        further = d / "replicates"
        assert further.is_dir() == (name in params["replicates"]), name    # a replicate job only for those
        if name in params["replicates"]:
            assert sorted(p.name for p in further.iterdir() if not p.name.startswith(".")) == ["1"], name   # not Snakemake's stamp
            assert json.loads((further / "1/run.json").read_text())["config"]["seed"] == run_record["config"]["seed"] + 1
            assert 0 <= json.loads((further / "1/test.json").read_text())["test_acc"] <= 1
    html = (project / "results/report.html").read_text()
    assert "Smoke run" in html
    for name in names:
        assert f'id="exp-{name}"' in html, name
    for section in ("overview", "leaderboard-section", "seeds", "comparisons", "experiments", "data"):
        assert f'id="{section}"' in html, section
    assert len(re.findall(r"<tr", html)) > 2 * len(names)
    # the ablation tables: seed 001's ladder step by step, seed 004's variants, each seed delta beside ours
    ablation = {m.group(1): re.findall(r'<tr data-experiment="([^"]+)">', html[m.end():].split("</table>", 1)[0])
                for m in re.finditer(r"<h3>Ablation: ([^<]+)</h3>", html)}
    ladder = [n for n, e in params["experiments"].items()
              if (e.get("reported") or {}).get("source", "").startswith("seed 001, step")]
    assert len(ladder) >= 13 and [n for n in ablation["seed 001"] if n in ladder] == ladder
    assert {n for n in names if n.startswith("ablation_") and n != "ablation_base"} <= set(ablation["seed 004"])


def test_smoke_changes_sizes_only():
    """The switch shrinks epochs, inputs and images per class, and nothing else of a config."""
    full = unit_params()
    for study in ("seed", "cifar10_local"):
        doc = P.read_yaml(ROOT / "studies" / f"{study}.yaml")
        full["datasets"].update(doc["datasets"])
        full["experiments"].update(doc["experiments"])
        full["replicates"].update(doc.get("replicates", {}))
    assert full["replicates"]
    params = {**full, "smoke": True}
    for name in params["experiments"]:
        small, big = P.experiment_config(params, name), P.experiment_config(full, name)
        differ = {k for k in big if small.get(k) != big[k]} - {"parent"}
        assert differ <= {"epochs", "input_size", "resize_before_crop"}, (name, differ)
        assert small["epochs"] == 1 and (small.get("input_size") or 0) <= 64
        assert len(P.replicate_configs(params, name)) == min(len(P.replicate_configs(full, name)), 1)
    for name in params["datasets"]:
        small, big = P.dataset_config(params, name), P.dataset_config(full, name)
        assert {k for k in {*big, *small} if small.get(k) != big.get(k)} <= \
            {"image_size", "train_per_class", "test_per_class"}, name
        assert small["train_per_class"] <= 2 and small["test_per_class"] <= 2
