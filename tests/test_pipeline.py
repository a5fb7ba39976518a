"""End to end on the bundled digits data, with the real `snakemake` and `dvc` commands, in
temporary git copies of the project.

Asserts, from each tool's own output, which stages ran after each kind of change; that DVC's
run-cache, experiments, queue, push/pull and checkout work on every output; and that the tools
hand a workspace over without an under-run. The copy keeps two cheap demo experiments at 2
epochs, and adds an experiment fine-tuned from another's checkpoint and a second data set with
its own experiment, so that "only that data set's chain" is a real claim.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import command_line, copy_project, files_in, processes_of, run, tool_env
from pipeline import live

pytestmark = pytest.mark.integration
DATA_STAGES = ("download", "prepare", "stats")


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


def dvc_ran(output: str) -> set[str]:
    """Stages whose command DVC ran (not those it restored from the run-cache or skipped)."""
    return set(re.findall(r"Running stage '([\w@]+)'", output))


def dvc_restored(output: str) -> set[str]:
    return set(re.findall(r"Stage '([\w@]+)' is cached - skipping run", output))


def by_stage(jobs: set[str], stage: str) -> set[str]:
    return {j.split("@")[1] for j in jobs if j.startswith(stage + "@")}


def preview(project: Path) -> dict[str, set[str]]:
    """What `python -m pipeline.wiring --preview` says each tool would run: {"snakemake": jobs, "dvc": stages}."""
    out = run(["python", "-m", "pipeline.wiring", "--preview"], cwd=project).stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert list(lines) == ["snakemake", "dvc repro"], out
    return {tool: set() if said == "nothing to run" else set(said.split())
            for tool, said in zip(("snakemake", "dvc"), lines.values())}


def snakemake(project: Path, *args: str) -> tuple[set[str], str]:
    p = run(["snakemake", "--cores", "2", *args], cwd=project)
    out = p.stdout + p.stderr
    return snakemake_jobs(out), out


def dvc(project: Path, *args: str, check: bool = True) -> tuple[set[str], str]:
    p = run(["dvc", *args], cwd=project, check=check)
    out = p.stdout + p.stderr
    return dvc_ran(out), out


# ---- editing params.yaml as a user would (round trip keeps comments) -------------------------

yaml = YAML()


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    doc = yaml.load(path)
    change(doc)
    yaml.dump(doc, path)


KEEP = ("digits_mlp", "digits_lenet_adam")   # cheap; digits_mlp inherits lr, digits_lenet_adam sets its own


def trim_for_tests(doc) -> None:
    """Few, short experiments (the rerun logic, not accuracy, is under test), a second data set,
    and an experiment fine-tuned from another one's checkpoint."""
    doc["epochs"], doc["lr"] = 2, 0.05   # the tests' own values, whatever params.yaml's defaults are
    doc["threads"] = 1             # the tests run two tool invocations at once on two cores
    for name in [e for e in doc["experiments"] if e not in KEEP]:
        del doc["experiments"][name]
    doc["datasets"]["digits_alt"] = {"source": {"kind": "sklearn_digits"}, "test_fraction": 0.2,
                                     "val_fraction": 0.2, "split_seed": 1}
    doc["experiments"]["mlp_child"] = {"dataset": "digits", "model": {"name": "mlp", "hidden": [64]},
                                       "pretrained": "digits_mlp", "finetune": "last_layer"}
    doc["experiments"]["alt_mlp"] = {"dataset": "digits_alt", "model": {"name": "mlp", "hidden": [32]},
                                     "lr": 0.1}


def set_up_demo(project: Path) -> dict:
    """Trim the copy for the tests and commit; its experiments, split into those inheriting the
    global lr and the rest."""
    edit_params(project, trim_for_tests)
    run(["git", "commit", "-qam", "test setup"], cwd=project)
    exps = yaml.load(project / "params.yaml")["experiments"]
    return {"all": set(exps), "inherit_lr": {e for e, v in exps.items() if "lr" not in v},
            "on_alt": {e for e, v in exps.items() if v["dataset"] == "digits_alt"}}


@pytest.fixture
def demo(project: Path) -> dict:
    return set_up_demo(project)


# The trimmed demo built once per test module and worker by each tool, for the scenarios that start
# from a finished workspace (those sharing one are in one xdist group, so on one worker). Each test
# gets a `cp -a` copy: the same bytes and mtimes, the tools' own records (.snakemake/, dvc.lock,
# .dvc/cache with its run-cache) and git history; only the path differs, which neither tool records
# (DVC keeps its hash state per repository path, and rehashes a new one).

def _build(tmp_path_factory, tool: list[str]) -> tuple[Path, dict, str]:
    project = copy_project(tmp_path_factory.mktemp(f"built_by_{tool[0]}") / "project")
    demo = set_up_demo(project)
    p = run(tool, cwd=project)
    return project, demo, p.stdout + p.stderr


@pytest.fixture(scope="module")
def snakemake_built(tmp_path_factory) -> tuple[Path, dict, str]:
    return _build(tmp_path_factory, ["snakemake", "--cores", "2"])


@pytest.fixture(scope="module")
def dvc_built(tmp_path_factory) -> tuple[Path, dict, str]:
    return _build(tmp_path_factory, ["dvc", "repro"])


def copy_of(built: tuple[Path, dict, str], tmp_path: Path) -> tuple[Path, dict, str]:
    source, demo, output = built
    subprocess.run(["cp", "-a", str(source), str(tmp_path / "project")], check=True)
    return tmp_path / "project", demo, output


def assert_reran_for_global_lr(jobs: set[str], demo: dict) -> None:
    """After a change of the global lr: train/evaluate exactly where it is inherited, no data stage."""
    assert by_stage(jobs, "train") == demo["inherit_lr"] != demo["all"]
    assert by_stage(jobs, "evaluate") == demo["inherit_lr"]
    assert not {j for j in jobs if j.split("@")[0] in DATA_STAGES}
    assert "report" in jobs


def outputs(project: Path) -> dict[str, str]:
    """sha256 of every pipeline output file (not logs, not the tools' records, not configure's
    links to the data sets' own files)."""
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("data", "results") for p in sorted((project / top).rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(project).parts)
            and p.parent != project / "data/sources"}


def models(project: Path) -> dict[str, str]:
    return {k: v for k, v in outputs(project).items() if k.endswith("model.pt")}


# ---- Snakemake ---------------------------------------------------------------------------------

@pytest.mark.xdist_group("snakemake")
def test_snakemake_reruns_exactly_what_changed(snakemake_built, tmp_path):
    project, demo, out = copy_of(snakemake_built, tmp_path)
    jobs = snakemake_jobs(out)                                  # the build's own jobs
    assert by_stage(jobs, "train") == demo["all"] and by_stage(jobs, "evaluate") == demo["all"]
    assert {"download@digits", "prepare@digits", "stats@digits", "report"} <= jobs
    assert "configure" not in {j.split("@")[0] for j in jobs}      # done at parse time
    jobs, out = snakemake(project)                                  # (the copy is a finished workspace too)
    assert jobs == set() and "Nothing to be done" in out
    _, out = snakemake(project, "--lint")
    assert "Congratulations, your workflow is in a good condition" in out

    # the global lr, typed the way ML people write it (YAML 1.2 reads 1e-2 as a number)
    text = (project / "params.yaml").read_text()
    assert "\nlr: 0.05 " in text
    (project / "params.yaml").write_text(text.replace("\nlr: 0.05 ", "\nlr: 1e-2 ", 1))
    foreseen = preview(project)
    jobs, _ = snakemake(project)
    assert_reran_for_global_lr(jobs, demo)
    assert foreseen["snakemake"] == jobs                       # the preview said so, before

    with open(project / "params.yaml", "a") as f:    # a comment-only edit reruns nothing
        f.write("# a note on the study\n")
    with open(project / "pipeline/wiring.py", "a") as f:   # nor does the tools' wiring: no stage's code
        f.write("# a note on the stage table\n")
    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out

    # one model family's code: the experiments of that family only
    with open(project / "pipeline/models/lenet.py", "a") as f:
        f.write("# a note on LeNet\n")
    jobs, _ = snakemake(project)
    assert jobs == {"train@digits_lenet_adam", "evaluate@digits_lenet_adam", "report"}

    # one data set's split: its chain and its experiments only
    edit_params(project, lambda d: d["datasets"]["digits_alt"].__setitem__("val_fraction", 0.25))
    jobs, _ = snakemake(project)
    assert {"prepare@digits_alt", "stats@digits_alt"} <= jobs
    assert not {"download@digits_alt", "prepare@digits", "stats@digits", "download@digits"} & jobs
    assert by_stage(jobs, "train") == demo["on_alt"] == {"alt_mlp"}

    # a parent's own change retrains the experiments fine-tuned from its checkpoint too
    edit_params(project, lambda d: d["experiments"]["digits_mlp"].__setitem__("seed", 7))
    jobs, _ = snakemake(project)
    assert by_stage(jobs, "train") == {"digits_mlp", "mlp_child"}

    # a new experiment: trained alone, picked up by the report
    edit_params(project, lambda d: d["experiments"].__setitem__(
        "new_mlp", {"dataset": "digits", "model": {"name": "mlp", "hidden": [16]}}))
    jobs, _ = snakemake(project)
    assert by_stage(jobs, "train") == {"new_mlp"} and "report" in jobs
    assert "new_mlp" in (project / "results/report.html").read_text()

    # an experiment's deleted outputs are rebuilt, though the report is newer than what is left
    subprocess.run(f"rm -r {project}/results/experiments/new_mlp/*", shell=True, check=True)
    jobs, _ = snakemake(project)
    assert jobs == {"train@new_mlp", "evaluate@new_mlp", "report"}


# ---- DVC ----------------------------------------------------------------------------------------

@pytest.mark.xdist_group("snakemake")
def test_snakemakes_own_report_holds_the_study_report_and_each_experiments_metrics(snakemake_built, tmp_path):
    project, demo, _ = copy_of(snakemake_built, tmp_path)
    run(["snakemake", "--report", "results/snakemake-report.html"], cwd=project)
    page = (project / "results/snakemake-report.html").read_text()
    categories = json.loads(re.search(r"(?:var|const|let) categories = (\{.*?\});\s*\n", page).group(1))
    assert categories["study"] == {"Other": ["results/report.html", "results/summary.json"]}
    assert set(categories["experiments"]) == demo["all"]
    for exp, files in categories["experiments"].items():
        assert sorted(files) == [f"results/experiments/{exp}/{f}" for f in
                                 ("confusion.csv", *(f"live/{f}" for f in sorted(live.FILES)),
                                  "per_class.csv", "test.json", "train.json")]


def commit(project: Path, message: str) -> str:
    run(["git", "add", "-A"], cwd=project)
    run(["git", "commit", "-qm", message], cwd=project)
    return run(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()


@pytest.mark.xdist_group("dvc")
def test_dvc_run_cache_experiments_and_overrides(dvc_built, tmp_path):
    project, demo, out = copy_of(dvc_built, tmp_path)
    assert by_stage(dvc_ran(out), "train") == demo["all"]      # the build's own stages
    commit(project, "first results")
    with open(project / "pipeline/wiring.py", "a") as f:   # the tools' wiring is no stage's code
        f.write("# a note on the stage table\n")
    ran, out = dvc(project, "repro")
    assert ran == set() and "Data and pipelines are up to date" in out
    # one model family's code: configure rewrites that family's manifests, its experiments rerun
    with open(project / "pipeline/models/lenet.py", "a") as f:
        f.write("# a note on LeNet\n")
    ran, out = dvc(project, "repro")
    assert ran == {"configure", "train@digits_lenet_adam", "evaluate@digits_lenet_adam", "report"}, ran
    commit(project, "a note")
    baseline = outputs(project)

    # -S lr: exactly the inheriting experiments train, params.yaml changes by one line
    ran, out = dvc(project, "exp", "run", "-S", "lr=1e-5")
    assert_reran_for_global_lr(ran, demo)
    diff = run(["git", "diff", "-U0", "params.yaml"], cwd=project).stdout
    removed, added = [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")]
    assert removed.startswith("-lr: 0.05 ") and added.startswith("+lr: 1e-05 ")      # that line only,
    assert removed.split("#")[1] == added.split("#")[1] and "#" in removed           # its comment kept

    # back to the original value: everything comes from the run-cache, nothing trains
    start = time.perf_counter()
    ran, out = dvc(project, "exp", "run", "-S", "lr=0.05")
    restore_s = time.perf_counter() - start
    assert not {j for j in ran if j.split("@")[0] in ("train", "evaluate") + DATA_STAGES}, ran
    assert by_stage(dvc_restored(out), "train") == demo["inherit_lr"]
    assert outputs(project) == baseline
    print(f"restore from the run-cache: {restore_s:.1f} s")

    # per-experiment overrides: a key the entry sets (edited by hand: the preview sees it first),
    # and one it inherits (Hydra's `+`)
    edit_params(project, lambda d: d["experiments"]["digits_lenet_adam"].__setitem__("lr", 0.003))
    foreseen = preview(project)
    ran, _ = dvc(project, "exp", "run")
    assert by_stage(ran, "train") == {"digits_lenet_adam"}
    assert foreseen["dvc"] == ran                              # DVC runs configure as well
    ran, _ = dvc(project, "exp", "run", "-S", "+experiments.digits_mlp.lr=0.1")
    assert by_stage(ran, "train") == {"digits_mlp", "mlp_child"}     # the child carries its parent's config

    # the metrics: the study's summary (the verdict counts, each experiment's mean test top-1 and
    # interval), and each experiment's last epoch as DVCLive wrote it (pipeline/live.py)
    [workspace] = [row["data"] for row in json.loads(run(["dvc", "exp", "show", "--json"], cwd=project).stdout)
                   if row["rev"] == "workspace"]
    names = list(yaml.load(project / "params.yaml")["experiments"])
    logs = [f"results/experiments/{name}/live/metrics.json" for name in names]
    assert sorted(workspace["metrics"]) == sorted(["results/summary.json", *logs])
    for path in logs:
        shown, history = workspace["metrics"][path]["data"], live.read_history(project / Path(path).parent)
        assert shown == json.loads((project / path).read_text())
        last = history.iloc[-1]
        assert (shown["step"], shown["val"]["acc"], shown["train"]["loss"]) == \
               (last["epoch"], last["val_acc"], last["train_loss"])
    summary = workspace["metrics"]["results/summary.json"]["data"]
    verdicts = {"reproduced": 0, "above": 0, "below": 0, "not_run": 0}   # no seed figures here
    assert summary["seed_figures"] == summary["ablation_changes"] == verdicts
    assert list(summary["test_top1"]) == names and all(0 <= v <= 100 for v in summary["test_top1"].values())
    written = json.loads((project / "results/summary.json").read_text())
    assert set(written["test_top1_ci"].values()) == {None}              # one run each: no spread,
    assert "test_top1_ci" not in summary                                 # so DVC shows no such column
    header = run(["dvc", "exp", "show", "--csv"], cwd=project).stdout.splitlines()[0].split(",")
    assert {"lr", "epochs", "optimizer", "experiments.digits_lenet_adam.lr", "test_top1.digits_mlp"} <= set(header)
    print(f"dvc exp show: {len(header)} columns")
    diff = run(["dvc", "metrics", "diff", "HEAD"], cwd=project).stdout
    assert "results/summary.json" in diff and "test_top1.digits_mlp" in diff, diff

    # learning curves of the workspace beside an experiment's, drawn with no network
    exp_name = run(["dvc", "exp", "ls", "--name-only"], cwd=project).stdout.split()[0]
    dvc(project, "plots", "diff", exp_name, "-o", "plots_diff")
    page = (project / "plots_diff/index.html").read_text()
    assert "cdn.jsdelivr" not in page and f'"rev": "{exp_name}"' in page and '"rev": "workspace"' in page
    drawn = offline_plots(project / "plots_diff/index.html")
    # per experiment its loss, accuracy and lr; each chart: the workspace's curves and the experiment's
    assert drawn["vegaEmbed"] == "function" and drawn["charts"] == 3 * len(names), drawn
    assert set(drawn["colours"]) == {2}, drawn
    assert drawn["epochs"] and all(e.isdigit() for e in drawn["epochs"]), drawn       # whole epochs only

    # apply an experiment: a consistent workspace
    _, out = dvc(project, "exp", "apply", exp_name)
    _, out = dvc(project, "status")
    assert "Data and pipelines are up to date" in out


@pytest.mark.xdist_group("dvc")
def test_dvc_gives_the_pipelines_own_error_lines(project):
    """A typo'd key reaches configure's one line under DVC too (DVC tracks params.yaml whole, so it
    never stops first on "Parameters 'lr' are missing"); without params.yaml DVC names the file."""
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("\nlr: ", "\nlrr: ", 1))
    p = run(["dvc", "repro"], cwd=project, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "(did you mean 'lr' for 'lrr'?)" in out and "are missing" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: params.yaml: "), out
    (project / "params.yaml").unlink()
    p = run(["dvc", "repro"], cwd=project, check=False)
    assert p.returncode != 0 and "'params.yaml' does not exist" in p.stdout + p.stderr, p.stdout + p.stderr


@pytest.mark.xdist_group("dvc")
def test_both_tools_read_params_yaml_alike(project):
    """YAML 1.1 (PyYAML) and 1.2 (DVC's ruamel) disagree on `010` and `yes`, and PyYAML takes the
    last of two `lr`s where DVC refuses: both tools now read it DVC's way."""
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("\nepochs: ", "\nepochs: 010 #", 1))
    run(["snakemake", "-n"], cwd=project)
    exp = next(e for e, v in yaml.load(project / "params.yaml")["experiments"].items() if "epochs" not in v)
    by_snakemake = json.loads((project / f"results/configs/experiments/{exp}.json").read_text())
    run(["rm", "-r", "results/configs"], cwd=project)
    run(["dvc", "repro", "configure"], cwd=project)
    by_dvc = json.loads((project / f"results/configs/experiments/{exp}.json").read_text())
    assert by_snakemake["epochs"] == by_dvc["epochs"] == 10

    (project / "params.yaml").write_text(text.replace("\nlr: ", "\nlr: 0.5\nlr: ", 1))
    p = run(["snakemake", "-n"], cwd=project, check=False)
    assert p.returncode != 0
    assert re.fullmatch(r'error: params.yaml: not valid YAML: while constructing a mapping .* found duplicate key '
                        r'"lr" with value "[0-9.e-]+" \(original value: "0.5"\) in "<unicode string>", line \d+, '
                        r'column 1', p.stderr.strip().splitlines()[-1]), p.stderr
    p = run(["dvc", "repro"], cwd=project, check=False)
    assert p.returncode != 0 and "params.yaml" in p.stdout + p.stderr


def offline_plots(page: Path) -> dict:
    """A DVC plots page opened in headless Chromium with every host name unresolvable: whether
    vega-embed loaded, how many charts it drew (SVG), the colours of the lines drawn in each (one
    per revision), and the labels of their x (epoch) axes."""
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    from report_browser import Browser, find_chromium
    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    with Browser(find_chromium()) as browser:
        browser.open(page)
        return browser.evaluate("""new Promise(done => setTimeout(() => {
            const charts = Array.from(document.querySelectorAll('.vega-embed svg.marks'));
            done({vegaEmbed: typeof vegaEmbed, charts: charts.length, colours: charts.map(svg => new Set(
                Array.from(svg.querySelectorAll('g.mark-line path')).filter(p => p.getAttribute('d'))
                     .map(p => p.getAttribute('stroke'))).size),
                  epochs: Array.from(document.querySelectorAll('g.role-axis[aria-label^="X-axis"] g.role-axis-label text'))
                     .map(t => t.textContent)});
            }, 2000))""")


def queue_logs(project: Path) -> dict[str, str]:
    """Each queued experiment's name -> its `dvc queue logs` (what its `dvc repro` printed)."""
    status = run(["dvc", "queue", "status"], cwd=project).stdout
    names = re.findall(r"^\S+\s+(\S+)\s+\S.*(?:Success|Failed)", status, re.M)
    return {n: run(["dvc", "queue", "logs", n], cwd=project).stdout for n in names}


def wait_for_queue(project: Path, n: int, limit_s: float = 600) -> str:
    """Poll `dvc queue status` until `n` tasks have ended (bounded, not a sleep-and-hope)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], cwd=project).stdout
        if len(re.findall(r"\b(Success|Failed)\b", status)) >= n:
            return status
        time.sleep(2)
    raise AssertionError(f"queue not done after {limit_s} s:\n{status}")


@pytest.mark.xdist_group("dvc")
def test_dvc_queue_push_pull_and_checkout(dvc_built, tmp_path):
    project, demo, _ = copy_of(dvc_built, tmp_path)
    first = commit(project, "results at lr 0.05")
    first_outputs = outputs(project)

    # two queued experiments, two workers: each trains only what inherits lr, the rest is restored
    for lr in ("0.01", "0.02"):
        dvc(project, "exp", "run", "--queue", "-S", f"lr={lr}")
    dvc(project, "queue", "start", "-j", "2")
    status = wait_for_queue(project, 2)
    assert status.count("Success") == 2, status
    shown = run(["dvc", "exp", "show", "--csv"], cwd=project).stdout
    assert ",0.01," in shown and ",0.02," in shown
    logs = queue_logs(project)
    assert len(logs) == 2, status
    for name, log in logs.items():
        assert by_stage(dvc_ran(log), "train") == demo["inherit_lr"], (name, log)

    # push everything to a local remote, lose the workspace's data and results, pull them back
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "local", str(remote))
    dvc(project, "push")
    for top in ("data", "results"):
        subprocess.run(["rm", "-rf", str(project / top)], check=True)
    run(["git", "checkout", "--", "data"], cwd=project)      # as a fresh clone has it (data/sources too)
    dvc(project, "pull")
    assert outputs(project) == first_outputs
    ran, out = dvc(project, "repro")
    assert ran == set() and "Data and pipelines are up to date" in out
    assert outputs(project) == first_outputs

    # a later commit, then back: `git checkout` + `dvc checkout` restore that commit's results
    edit_params(project, lambda d: d.__setitem__("lr", 0.03))
    dvc(project, "repro")
    commit(project, "results at lr 0.03")
    assert outputs(project) != first_outputs
    run(["git", "checkout", "-q", first], cwd=project)
    dvc(project, "checkout")
    assert outputs(project) == first_outputs


def trained(project: Path, exp: str) -> dict:
    """An experiment's weights, epoch log and test metrics, and the threads its run.json records."""
    import torch
    d = project / "results/experiments" / exp
    return {"weights": torch.load(d / "model.pt", weights_only=True)["state_dict"],
            "history": files_in(d / "live"), "test": (d / "test.json").read_bytes(),
            "threads": json.loads((d / "run.json").read_text())["threads"]}


def trained_lr(project: Path, exp: str) -> float:
    return json.loads((project / "results/experiments" / exp / "run.json").read_text())["config"]["lr"]


def assert_same_training(a: dict, b: dict) -> None:
    import torch
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert (a["history"], a["test"], a["threads"]) == (b["history"], b["test"], b["threads"])


@pytest.mark.xdist_group("folder")
def test_an_edit_inside_an_image_folder_reruns_that_data_sets_chain_under_both_tools(project, tmp_path):
    import miniatures as mini
    photos = mini.image_folder(tmp_path / "photos", {"cat": 8, "dog": 8})

    def study(doc):
        doc["epochs"], doc["threads"] = 1, 1
        for name in [e for e in doc["experiments"] if e != "digits_mlp"]:
            del doc["experiments"][name]
        doc["datasets"]["pets"] = {"source": {"kind": "folder", "path": str(photos)}, "image_size": 8,
                                   "test_fraction": 0.25, "val_fraction": 0.25, "split_seed": 0}
        doc["experiments"]["pets_mlp"] = {"dataset": "pets", "model": {"name": "mlp", "hidden": [16]}}
    edit_params(project, study)
    commit(project, "a folder data set")
    chain = {"download@pets", "prepare@pets", "stats@pets", "train@pets_mlp", "evaluate@pets_mlp", "report"}

    snakemake(project)
    (photos / "dog" / "003.png").unlink()                 # deep inside: the top folder's time is unchanged
    jobs, _ = snakemake(project)
    assert jobs == chain
    assert json.loads((project / "data/prepared/pets/meta.json").read_text())["counts"]["train"] == 8

    # replaced by `cp -p` with an image of the same size and time: seen (the listing holds ctimes)
    target, other = photos / "cat" / "002.bmp", tmp_path / "other.bmp"
    other.write_bytes(mini.image_bytes(1, (12, 10), "BMP", "RGB"))
    assert other.stat().st_size == target.stat().st_size and other.read_bytes() != target.read_bytes()
    os.utime(other, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns))
    run(["cp", "-p", str(other), str(target)], cwd=tmp_path)
    jobs, _ = snakemake(project)
    assert jobs == chain

    dvc(project, "repro")                                  # DVC's own record of this workspace
    (photos / "cat" / "004.jpg").write_bytes(mini.image_bytes(1, (12, 10), "JPEG"))   # replaced
    ran, _ = dvc(project, "repro")
    assert ran == chain
    ran, out = dvc(project, "repro")
    assert ran == set() and "Data and pipelines are up to date" in out


# ---- both tools in one workspace -------------------------------------------------------------

@pytest.mark.xdist_group("snakemake")
def test_handing_the_workspace_between_the_tools(snakemake_built, tmp_path):
    # Snakemake built it and recorded its outputs in DVC by itself (onsuccess): DVC trains nothing
    project, demo, _ = copy_of(snakemake_built, tmp_path)
    built = outputs(project)
    ran, out = dvc(project, "repro")
    assert ran == set() and "Data and pipelines are up to date" in out
    assert outputs(project) == built

    # the same params give the same numbers whichever tool trains: every tensor, history and test
    # metrics (Snakemake gives a job OMP_NUM_THREADS=1, DVC a user's shell does not: the config's
    # `threads` rules)
    exp = "digits_lenet_adam"
    by_snakemake = trained(project, exp)
    shell = {k: v for k, v in tool_env().items() if k != "OMP_NUM_THREADS"}
    p = subprocess.run(["dvc", "repro", "-f", "-s", f"train@{exp}", f"evaluate@{exp}"], cwd=project, env=shell,
                       capture_output=True, text=True)
    assert dvc_ran(p.stdout + p.stderr) == {f"train@{exp}", f"evaluate@{exp}"}, p.stdout + p.stderr
    by_dvc = trained(project, exp)
    assert_same_training(by_dvc, by_snakemake)
    assert by_dvc["threads"] == by_snakemake["threads"] == 1      # as params.yaml says

    # DVC changes lr (writing it as `1e-05`, which Snakemake reads as a number) over Snakemake's
    # outputs: then plain Snakemake trains nothing, neither what DVC retrained nor the experiments
    # the edit left alone (their configs keep their mtimes, and DVC's copy cache leaves every file's)
    ran, _ = dvc(project, "exp", "run", "-S", "lr=0.00001")
    assert "\nlr: 1e-05 " in (project / "params.yaml").read_text()
    assert_reran_for_global_lr(ran, demo)
    after_dvc = outputs(project)
    jobs, out = snakemake(project)
    assert jobs == set() and "Nothing to be done" in out
    assert outputs(project) == after_dvc

    # a partial Snakemake run is not handed over (DVC would record outputs it left as they were)
    _, out = snakemake(project, "results/report.html", "--forcerun", "report")
    assert "DVC has no record of it" in out

    # no under-run in a workspace DVC built: a params edit reruns exactly what it affects
    edit_params(project, lambda d: d.__setitem__("lr", 0.03))
    jobs, _ = snakemake(project)
    assert_reran_for_global_lr(jobs, demo)

    # params.yaml edited while Snakemake trains: its outputs are not handed over (DVC would record
    # the new lr against the model trained with the old), and `dvc repro` retrains with the new lr
    exp = "digits_lenet_adam"
    edit_params(project, lambda d: d["experiments"][exp].__setitem__("lr", 0.003))
    out = while_training(["snakemake", "--cores", "1"], project,
                         lambda _: edit_params(project, lambda d: d["experiments"][exp].__setitem__("lr", 0.004)))
    assert (f"not handed over to DVC: params.yaml or a folder source changed during the run (results/configs/experiments/{exp}.json "
            f"would change); DVC keeps its record of the run before") in out, out
    assert trained_lr(project, exp) == 0.003
    ran, _ = dvc(project, "repro")
    assert by_stage(ran, "train") == {exp} and trained_lr(project, exp) == 0.004


def assert_nothing_to_do(project: Path) -> None:
    """Both tools say the workspace is current, and Snakemake's parse (configure, the take-over of
    what DVC restored) leaves it so for DVC."""
    for command in (["dvc", "status"], ["snakemake", "-n"], ["dvc", "status"]):
        p = run(command if command[0] == "dvc" else ["snakemake", "--cores", "2", "-n"], cwd=project)
        out = p.stdout + p.stderr
        assert ("Data and pipelines are up to date" if command[0] == "dvc" else "Nothing to be done") in out, out
        assert not snakemake_jobs(out), out


@pytest.mark.xdist_group("dvc")
def test_the_tests_that_read_the_repository_pass_where_dvc_lock_is_committed(project):
    """The README's set-up commits dvc.lock: a test of this repository must not fail in such a clone
    (one did: it asserted that no dvc.lock was tracked)."""
    dvc(project, "repro", "configure")
    commit(project, "demo results")
    assert run(["git", "ls-files", "dvc.lock"], cwd=project).stdout.strip() == "dvc.lock"
    p = run(["python", "-m", "pytest", "-q", "-n", "0", "-m", "not integration", "tests/test_wiring.py"],
            cwd=project, check=False)
    assert p.returncode == 0 and " passed" in p.stdout, p.stdout[-3000:]


@pytest.mark.xdist_group("snakemake")
def test_after_each_restore_neither_tool_has_anything_to_do(snakemake_built, tmp_path):
    """The README's routes back to a result: `make clean` + `dvc checkout`, an experiment and back,
    `dvc exp apply`, a fresh clone + `dvc pull`, `git checkout <rev>` + `dvc checkout`. DVC dates each
    restored file as copied; Snakemake still trains nothing, and an edit afterwards still reruns
    exactly what it changes."""
    project, demo, _ = copy_of(snakemake_built, tmp_path)
    first = commit(project, "demo results")      # params.yaml, dvc.lock and data/sources/, as the README says
    built = outputs(project)

    run(["make", "clean"], cwd=project)
    assert not (project / "results").exists() and not (project / ".snakemake").exists()
    dvc(project, "checkout")
    assert_nothing_to_do(project)
    assert outputs(project) == built
    (project / "results/configs/experiments/digits_mlp.json").touch()     # newer, the same content
    assert_nothing_to_do(project)

    ran, _ = dvc(project, "exp", "run", "-S", "lr=0.01")
    assert_reran_for_global_lr(ran, demo)
    at_exp = outputs(project)
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=project)
    dvc(project, "checkout")
    assert_nothing_to_do(project)
    assert outputs(project) == built
    exp = run(["dvc", "exp", "ls", "--name-only"], cwd=project).stdout.split()[0]
    dvc(project, "exp", "apply", exp)
    assert_nothing_to_do(project)
    assert outputs(project) == at_exp

    dvc(project, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    commit(project, "results at lr 0.01")
    dvc(project, "push")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], cwd=tmp_path)
    dvc(clone, "pull")
    assert_nothing_to_do(clone)
    jobs, out = snakemake(clone)
    assert jobs == set() and "Nothing to be done" in out
    assert outputs(clone) == at_exp

    run(["git", "checkout", "-q", first], cwd=project)
    dvc(project, "checkout")
    assert_nothing_to_do(project)
    assert outputs(project) == built
    edit_params(project, lambda d: d.__setitem__("lr", 0.03))      # the take-over hides no edit
    jobs, _ = snakemake(project, "-n")
    assert_reran_for_global_lr(jobs, demo)


def tools_do_what_the_preview_said(project: Path) -> dict[str, set[str]]:
    """The preview, then each tool for real: `snakemake -n` plans exactly its snakemake line, and
    `dvc repro` runs (or restores from its run-cache) exactly its dvc line; then neither has anything
    to do. (`dvc repro --dry` is no such answer: it cannot see what configure will write.)"""
    foreseen = preview(project)
    jobs, out = snakemake(project, "-n")
    assert jobs == foreseen["snakemake"], out
    ran, out = dvc(project, "repro")
    assert ran | dvc_restored(out) == foreseen["dvc"], out
    assert_nothing_to_do(project)
    return foreseen


@pytest.mark.xdist_group("dvc")
def test_the_preview_says_what_each_tool_runs_over_a_users_sequence(dvc_built, tmp_path):
    """Experiments that leave the workspace as committed, then one in the workspace, a study switch
    there and back, edits, a partial Snakemake run (which DVC does not record), a bad value, and the
    way back to the commit: at each step the preview says what each tool then does."""
    project, demo, _ = copy_of(dvc_built, tmp_path)
    first = outputs(project)
    commit(project, "demo results")
    for override in ("lr=0.01", "epochs=3"):               # the README's lead: each from the commit
        dvc(project, "exp", "run", "--temp", "-S", override)
    assert run(["git", "status", "--porcelain"], cwd=project).stdout == "" and outputs(project) == first
    assert_nothing_to_do(project)
    changed = [set(json.loads(run(["dvc", "params", "diff", "HEAD", name, "--json"], cwd=project).stdout)
                   ["params.yaml"]) for name in run(["dvc", "exp", "ls", "--name-only"], cwd=project).stdout.split()]
    assert sorted(changed, key=sorted) == [{"epochs"}, {"lr"}]          # neither built on the other

    ran, _ = dvc(project, "exp", "run", "-S", "lr=0.01")       # in the workspace: from the run-cache
    assert not by_stage(ran, "train")
    p = run(["python", "-m", "pipeline.study", "seed", "--save"], cwd=project)
    assert p.stderr.rstrip().endswith("these differ from the last commit: lr: 0.01 (committed: 0.05)"), p.stderr
    run(["python", "-m", "pipeline.study", "demo"], cwd=project)
    assert tools_do_what_the_preview_said(project) == {"snakemake": set(), "dvc": set()}

    edit_params(project, lambda d: d.__setitem__("lr", 0.05))
    foreseen = tools_do_what_the_preview_said(project)
    assert_reran_for_global_lr(foreseen["snakemake"], demo)
    assert foreseen["dvc"] == foreseen["snakemake"] | {"configure"}

    # Snakemake runs one experiment only: not handed over, so DVC would redo it, and says so
    edit_params(project, lambda d: d.__setitem__("lr", 0.03))
    snakemake(project, "results/experiments/digits_mlp/test.json")
    foreseen = tools_do_what_the_preview_said(project)
    assert foreseen["dvc"] - foreseen["snakemake"] == {"configure", "train@digits_mlp", "evaluate@digits_mlp"}

    edit_params(project, lambda d: d.__setitem__("lr", -1))
    line = "error: params.yaml: lr: -1 is less than or equal to the minimum of 0"
    p = run(["python", "-m", "pipeline.wiring", "--preview"], cwd=project, check=False)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip() == line, p.stderr
    assert line in run(["snakemake", "-n"], cwd=project, check=False).stderr

    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=project)       # back to the commit
    dvc(project, "checkout")
    assert preview(project) == {"snakemake": set(), "dvc": set()}
    assert_nothing_to_do(project)
    assert outputs(project) == first


def new_runs(output: str) -> set[tuple[str, int]]:
    """(experiment, i) of every further run the replicate stage trained (its own log lines)."""
    return {(e, int(i)) for i, e in re.findall(r"replicate (\d+) of (\w+): seed", output)}


@pytest.mark.xdist_group("replicates")
def test_replicates_train_only_their_new_runs_under_both_tools(project, demo):
    two = ("digits_mlp", "digits_lenet_adam")
    jobs, _ = snakemake(project, "-n")
    assert by_stage(jobs, "train") == demo["all"] and not by_stage(jobs, "replicate")   # none listed: no job
    edit_params(project, lambda d: d.__setitem__("replicates", {e: 3 for e in two}))
    jobs, out = snakemake(project)
    assert by_stage(jobs, "train") == demo["all"] and by_stage(jobs, "replicate") == set(two)
    assert new_runs(out) == {(e, i) for e in two for i in (1, 2)}
    for e in demo["all"]:
        further = project / "results/experiments" / e / "replicates"
        assert (sorted(p.name for p in further.iterdir() if not p.name.startswith("."))   # not Snakemake's stamp
                if e in two else further.exists()) == (["1", "2"] if e in two else False)
    summary = json.loads((project / "results/summary.json").read_text())
    spread = {e: (summary["test_top1"][e], summary["test_top1_ci"][e]) for e in two}
    assert all(half is not None and half >= 0 for _, half in spread.values())
    assert {e for e, half in summary["test_top1_ci"].items() if half is None} == demo["all"] - set(two)

    # seed figures chosen against our intervals: one inside, one 2 points under the widened low end
    (m1, h1), (m2, h2) = spread["digits_mlp"], spread["digits_lenet_adam"]
    inside, outside = round(m1 + h1 / 2, 2), round(m2 - h2 - 1.0 - 2.0, 2)
    edit_params(project, lambda d: (
        d["experiments"]["digits_mlp"].__setitem__("reported", {"split": "test", "top1": inside}),
        d["experiments"]["digits_lenet_adam"].__setitem__("reported", {"split": "test", "top1": outside})))
    jobs, _ = snakemake(project)
    assert jobs == {"report"}                           # a seed figure retrains nothing
    html = (project / "results/report.html").read_text()
    assert "1 of 2 seed figures reproduced, 0 below, 1 above, 0 not run" in html
    row = html.split('<tr data-experiment="digits_lenet_adam"', 1)[1].split("</tr>", 1)[0]
    assert "above by 2.0" in row and "(3 runs)" in row

    # DVC raises both to 5: their replicate jobs rerun and train exactly the 2 new runs each
    ran, out = dvc(project, "exp", "run", "-S", "replicates.digits_mlp=5", "-S", "replicates.digits_lenet_adam=5")
    assert by_stage(ran, "replicate") == set(two) and not by_stage(ran, "train"), ran
    assert new_runs(out) == {(e, i) for e in two for i in (3, 4)}
    assert json.loads((project / "results/summary.json").read_text())["test_top1"].keys() == demo["all"]
    assert "(5 runs)" in (project / "results/report.html").read_text()
    ran, out = dvc(project, "exp", "run", "-S", "replicates.digits_mlp=3", "-S", "replicates.digits_lenet_adam=3")
    assert not by_stage(ran, "train") and new_runs(out) == set()    # back to 3: the runs are there

    # a third experiment listed by DVC (`+`: a new key): exactly its replicate job is added and run;
    # one taken off the list (`~`): its job is gone, the report shows it as one run again
    ran, out = dvc(project, "exp", "run", "-S", "+replicates.alt_mlp=2", "-S", "~replicates.digits_mlp")
    assert by_stage(ran, "replicate") == {"alt_mlp"} and not by_stage(ran, "train"), ran
    assert new_runs(out) == {("alt_mlp", 1)}
    summary = json.loads((project / "results/summary.json").read_text())
    assert summary["test_top1_ci"]["digits_mlp"] is None and summary["test_top1_ci"]["alt_mlp"] is not None
    assert "replicate@digits_mlp" not in dvc(project, "status")[1]


def while_training(cmd: list[str], project: Path, meanwhile) -> str:
    """Run cmd; once its first training job has begun, pause that job (SIGSTOP), call meanwhile(the
    tool's process), and let it go on: so `meanwhile` meets the tool running, however fast or busy
    the machine is. Returns the tool's output; it must succeed."""
    out = project / "tool.out"
    with open(out, "w") as f:
        p = subprocess.Popen(cmd, cwd=project, env=tool_env(), stdout=f, stderr=subprocess.STDOUT)
    job = None
    try:
        deadline = time.monotonic() + 300
        while job is None and p.poll() is None and time.monotonic() < deadline:
            job = next((pid for pid in processes_of(p.pid) if "pipeline.train" in command_line(pid)), None)
            time.sleep(0.05)
        assert job, f"{cmd} ended before training:\n{out.read_text()[-3000:]}"
        os.kill(job, signal.SIGSTOP)
        meanwhile(p)
    finally:
        if job:
            os.kill(job, signal.SIGCONT)
        p.wait(timeout=600)
    assert p.returncode == 0, out.read_text()[-3000:]
    return out.read_text()


def config_files(project: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(project)): (p.stat().st_mtime_ns, p.read_text())
            for p in sorted((project / "results/configs").rglob("*.json"))}


@pytest.mark.xdist_group("dvc")
def test_the_tools_never_run_at_once(project, demo):
    """Each refuses while the other is running, with one line naming it; and while one runs, an
    edit of params.yaml reaches no config file (its jobs read them) through a dry run or a refused
    run, so the model trained is recorded with the config it was trained with, and the next run of
    either tool retrains the edited experiment."""
    exp = "digits_lenet_adam"
    target = f"results/experiments/{exp}/train.json"     # one training job is enough
    for first, second, expected, after in (
            (["dvc", "repro", f"train@{exp}"], ["snakemake", "--cores", "1"], "DVC is running",
             ["snakemake", "--cores", "1", target]),
            (["snakemake", "--cores", "1", target], ["dvc", "status"], "Unable to acquire lock",
             ["dvc", "repro", f"train@{exp}"])):
        subprocess.run(["rm", "-rf", str(project / "logs"), str(project / "results")])
        edit_params(project, lambda d: d["experiments"][exp].__setitem__("lr", 0.003))

        def meanwhile(p: subprocess.Popen) -> None:
            other = run(second, cwd=project, check=False)
            assert other.returncode != 0 and expected in other.stdout + other.stderr
            configs = config_files(project)
            edit_params(project, lambda d: d["experiments"][exp].__setitem__("lr", 0.004))
            for cmd in (["snakemake", "-n"], ["snakemake", "--cores", "1"]):
                refused = run(cmd, cwd=project, check=False)
                assert p.poll() is None, f"{first} ended before {cmd} could meet it running"
                assert refused.returncode != 0, refused.stdout + refused.stderr
                who = ("another snakemake is running in this workspace (pid " if first[0] == "snakemake" else
                       "DVC is running a stage in this workspace (")      # (DVC lets go of its lock then)
                assert f"error: {who}" in refused.stderr, refused.stderr
                assert config_files(project) == configs, cmd
        while_training(first, project, meanwhile)
        assert trained_lr(project, exp) == 0.003
        retrained = run(after, cwd=project)
        ran = dvc_ran(retrained.stdout + retrained.stderr) | snakemake_jobs(retrained.stdout + retrained.stderr)
        assert f"train@{exp}" in ran
        assert trained_lr(project, exp) == 0.004


# ---- a failed experiment ------------------------------------------------------------------------

@pytest.mark.xdist_group("failure")
def test_the_report_shows_a_diverged_experiment_under_both_tools(project):
    def setup(doc, lr):
        doc["epochs"] = 1
        for name in [e for e in doc["experiments"] if e not in ("digits_mlp", "digits_lenet")]:
            del doc["experiments"][name]
        if lr is None:
            doc["experiments"]["digits_lenet"].pop("lr", None)
        else:
            doc["experiments"]["digits_lenet"]["lr"] = lr
    report = project / "results/report.html"

    def assert_failure_reported(out: str) -> None:
        assert "error: experiment digits_lenet diverged in epoch 1" in out
        html = report.read_text()
        assert "digits_mlp" in html and "diverged in epoch 1" in html and "failed" in html
        assert report.stat().st_mtime == 1                  # dated 1970: never taken as current

    edit_params(project, lambda d: setup(d, 1e30))
    p = run(["snakemake", "--cores", "2", "-k"], cwd=project, check=False)
    assert p.returncode != 0
    assert_failure_reported(p.stdout + p.stderr)
    edit_params(project, lambda d: setup(d, None))            # the fix: the next run rebuilds the report
    jobs, _ = snakemake(project)
    assert by_stage(jobs, "train") == {"digits_lenet"} and "report" in jobs
    assert report.stat().st_mtime > 0 and "diverged" not in report.read_text()

    subprocess.run(["rm", "-rf", str(project / "results"), str(project / "logs")], check=True)
    edit_params(project, lambda d: setup(d, 1e30))
    p = run(["dvc", "repro"], cwd=project, check=False)
    assert p.returncode != 0
    assert_failure_reported(p.stdout + p.stderr)


@pytest.mark.xdist_group("failure")
def test_cuda_asked_for_where_none_is_visible_is_one_line_under_both_tools(project):
    """`device: cuda` where no GPU is visible (CUDA_VISIBLE_DEVICES="" hides any there is): under
    either tool the train job ends with the stage's one line, and writes no checkpoint."""
    def setup(doc):
        doc["epochs"] = 1
        for name in [e for e in doc["experiments"] if e != "digits_mlp"]:
            del doc["experiments"][name]
        doc["experiments"]["digits_mlp"]["device"] = "cuda"
    edit_params(project, setup)
    env = {**tool_env(), "CUDA_VISIBLE_DEVICES": ""}
    for cmd in (["snakemake", "--cores", "2"], ["dvc", "repro"]):
        p = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "Traceback" not in out, out
        assert "error: device: cuda: no CUDA GPU is visible to this process" in out, out
        assert not (project / "results/experiments/digits_mlp/model.pt").exists()
