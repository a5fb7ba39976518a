"""End to end on the bundled digits data, with Snakemake and with DVC, in temporary copies.

Asserts, from each tool's own output, exactly which stages rerun after each kind of change, and
that neither tool redoes the other's up-to-date work. The copy keeps three cheap demo
experiments at 2 epochs, and adds a second data set (`digits_alt`) with its own experiment, so that
"only that data set's chain" is a real claim, and an experiment fine-tuned from another's checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import run

pytestmark = pytest.mark.integration
TRAINING = ("train", "evaluate")


# ---- reading what each tool did --------------------------------------------------------------

def snakemake_jobs(output: str) -> set[str]:
    """'rule@wildcard' for every job Snakemake ran (its own log lines)."""
    jobs, rule = set(), None
    for line in output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = m.group(1)
            jobs.add(rule)
        elif rule and (m := re.match(r"^wildcards: \w+=(\w+)", line.strip())):
            jobs.discard(rule)
            jobs.add(f"{rule}@{m.group(1)}")
            rule = None
    jobs.discard("all")
    return jobs


def dvc_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@]+)'", output))


def by_stage(jobs: set[str], stage: str) -> set[str]:
    return {j.split("@")[1] for j in jobs if j.startswith(stage + "@")}


def snakemake(project: Path) -> tuple[set[str], str]:
    p = run(["snakemake", "--cores", "2"], cwd=project)
    out = p.stdout + p.stderr
    return snakemake_jobs(out), out


def dvc(project: Path, *args: str) -> tuple[set[str], str]:
    p = run(["dvc", *args], cwd=project)
    out = p.stdout + p.stderr
    return dvc_stages(out), out


# ---- editing params.yaml as a user would (round-trip keeps comments and the study merge) ------

yaml = YAML()


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    doc = yaml.load(path)
    change(doc, doc["studies"]["demo"])
    yaml.dump(doc, path)


KEEP = ("digits_mlp", "digits_lenet", "digits_lenet_adam")   # cheap; one of them sets its own lr


def trim_for_tests(doc, demo) -> None:
    """Few, short experiments (the rerun logic, not accuracy, is under test), a second data set,
    and an experiment fine-tuned from another one's checkpoint."""
    doc["epochs"] = 2
    for name in [e for e in demo["experiments"] if e not in KEEP]:
        del demo["experiments"][name]
    demo["datasets"]["digits_alt"] = {"source": {"kind": "sklearn_digits"}, "test_fraction": 0.2,
                                      "val_fraction": 0.2, "split_seed": 1}
    demo["experiments"]["alt_mlp"] = {"dataset": "digits_alt", "model": {"name": "mlp", "hidden": [32]},
                                      "lr": 0.1}
    demo["experiments"]["mlp_child"] = {"dataset": "digits", "model": {"name": "mlp", "hidden": [64]},
                                        "pretrained": "digits_mlp", "finetune": "last_layer"}


def model_bytes(project: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (project / "results/experiments").glob("*/model.pt")}


@pytest.fixture
def demo(project: Path) -> dict:
    """The copy's experiments, split into those inheriting the global lr and the rest."""
    edit_params(project, trim_for_tests)
    run(["git", "commit", "-qam", "test setup"], cwd=project)
    doc = yaml.load(project / "params.yaml")
    exps = doc["studies"]["demo"]["experiments"]
    return {"all": set(exps), "inherit_lr": {e for e, v in exps.items() if "lr" not in v},
            "on_alt": {e for e, v in exps.items() if v["dataset"] == "digits_alt"}}


def assert_reran_for_global_lr(jobs: set[str], demo: dict) -> None:
    """After a change of the global lr: train/evaluate exactly where it is inherited, no data stage."""
    assert by_stage(jobs, "train") == demo["inherit_lr"] != demo["all"]
    assert by_stage(jobs, "evaluate") == demo["inherit_lr"]
    assert not {j for j in jobs if j.split("@")[0] in ("download", "prepare", "stats")}
    assert "report" in jobs


def output_mtimes(project: Path) -> dict[str, int]:
    """mtime of every pipeline output (not logs, not the tools' records)."""
    return {str(p.relative_to(project)): p.stat().st_mtime_ns
            for top in ("data", "results") for p in (project / top).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def assert_no_training(out: str, project: Path, before: dict[str, bytes]) -> None:
    assert "epoch 1/" not in out
    assert model_bytes(project) == before


# ---- the scenarios -----------------------------------------------------------------------------

@pytest.mark.xdist_group("snakemake")
def test_snakemake_reruns_exactly_what_changed(project, demo):
    jobs, out = snakemake(project)
    assert by_stage(jobs, "train") == demo["all"] and by_stage(jobs, "evaluate") == demo["all"]
    assert {"download@digits", "prepare@digits", "stats@digits", "report"} <= jobs
    assert (project / "results/report.html").stat().st_size > 1000

    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out

    # DVC over Snakemake's finished work: it runs every stage (it has no record), each returns at
    # once, and adopting the outputs into its cache leaves their mtimes alone (else Snakemake would
    # see a model newer than its evaluation and rerun it)
    models, mtimes = model_bytes(project), output_mtimes(project)
    stages, out = dvc(project, "repro")
    assert by_stage(stages, "train") == demo["all"]
    assert out.count("is up to date (stamp matches)") == len(stages) - len(by_stage(stages, "configure"))
    assert_no_training(out, project, models)
    assert output_mtimes(project) == mtimes
    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out
    stages, out = dvc(project, "repro")
    assert stages == set() and "Data and pipelines are up to date" in out

    # the global lr: only experiments inheriting it retrain; no data stage reruns
    edit_params(project, lambda doc, demo_: doc.__setitem__("lr", 0.02))
    jobs, _ = snakemake(project)
    assert_reran_for_global_lr(jobs, demo)

    # a comment-only edit reruns nothing
    with open(project / "params.yaml", "a") as f:
        f.write("# a note on the study\n")
    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out

    # one data set's split: its chain and its experiments only
    edit_params(project, lambda doc, d: d["datasets"]["digits_alt"].__setitem__("val_fraction", 0.25))
    jobs, _ = snakemake(project)
    assert {"prepare@digits_alt", "stats@digits_alt"} <= jobs
    assert not {"download@digits_alt", "prepare@digits", "stats@digits", "download@digits"} & jobs
    assert by_stage(jobs, "train") == demo["on_alt"] == {"alt_mlp"}

    # a parent's own change retrains the experiments fine-tuned from its checkpoint too
    edit_params(project, lambda doc, d: d["experiments"]["digits_mlp"].__setitem__("seed", 7))
    jobs, _ = snakemake(project)
    assert by_stage(jobs, "train") == {"digits_mlp", "mlp_child"}

    # a new experiment: trained alone, picked up by the report
    edit_params(project, lambda doc, d: d["experiments"].__setitem__(
        "new_mlp", {"dataset": "digits", "model": {"name": "mlp", "hidden": [16]}}))
    jobs, _ = snakemake(project)
    assert by_stage(jobs, "train") == {"new_mlp"} and "report" in jobs
    assert "new_mlp" in (project / "results/report.html").read_text()


@pytest.mark.xdist_group("dvc")
def test_dvc_reruns_exactly_what_changed(project, demo):
    stages, out = dvc(project, "repro")
    assert by_stage(stages, "train") == demo["all"]
    stages, out = dvc(project, "repro")
    assert stages == set() and "Data and pipelines are up to date" in out

    # Snakemake over DVC's finished work: nothing to do
    models = model_bytes(project)
    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out
    assert_no_training(out, project, models)

    # dvc exp run -S lr=...: configure reruns everywhere (cheap), training only where lr is inherited.
    stages, _ = dvc(project, "exp", "run", "-S", "lr=0.02")
    assert_reran_for_global_lr(stages, demo)

    with open(project / "params.yaml", "a") as f:
        f.write("# a note on the study\n")
    stages, out = dvc(project, "repro")
    assert stages == set()

    edit_params(project, lambda doc, d: d["datasets"]["digits_alt"].__setitem__("val_fraction", 0.25))
    stages, _ = dvc(project, "repro")
    assert {"prepare@digits_alt", "stats@digits_alt"} <= stages
    assert not {"download@digits_alt", "prepare@digits", "stats@digits"} & stages
    assert by_stage(stages, "train") == demo["on_alt"] == {"alt_mlp"}

    edit_params(project, lambda doc, d: d["experiments"].__setitem__(
        "new_mlp", {"dataset": "digits", "model": {"name": "mlp", "hidden": [16]}}))
    stages, _ = dvc(project, "repro")
    assert by_stage(stages, "train") == {"new_mlp"} and "report" in stages
    assert "new_mlp" in (project / "results/report.html").read_text()
