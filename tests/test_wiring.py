"""The one stage table: dvc.yaml is generated from it, the code each stage imports is declared,
params.yaml survives DVC's rewrites, and the workspace lock keeps the tools apart."""
from __future__ import annotations

import difflib
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import lock, plan, wiring
from pipeline import params as P

ROOT = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_the_generated_one():
    assert (ROOT / "dvc.yaml").read_text() == wiring.dvc_yaml(), \
        "dvc.yaml is stale: run `python -m pipeline.wiring dvc.yaml`"


def test_every_dvc_output_is_cached_and_only_configures_persists():
    """`dvc exp`, push/pull and checkout only cover cached outputs, the run-cache only stages with
    no persistent one. configure's folder persists so that unchanged configs keep their mtimes
    (Snakemake goes by them): it is rerun, in a second, rather than restored."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    persistent = set()
    for name, st in dvc.items():
        body = st.get("do", st)
        for key in ("outs", "metrics", "plots"):
            for out in body.get(key, []):
                props = next(iter(out.values())) if isinstance(out, dict) else {}
                assert props.get("cache", True), (name, out)
                if props.get("persist"):
                    persistent.add(name)
    assert persistent == {"configure"}


def runtime_imports(module: str) -> set[str]:
    """pipeline modules loaded by importing `module` (top-level imports only)."""
    code = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('pipeline.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def as_file(module: str) -> str:
    rel = Path(*module.split("."))
    return str(rel.with_suffix(".py")) if (ROOT / rel.with_suffix(".py")).exists() else str(rel / "__init__.py")


@pytest.mark.parametrize("stage", wiring.STAGES, ids=lambda s: s.name)
def test_code_deps_cover_what_the_stage_imports(stage):
    deps = set(wiring.code_deps(stage.module))
    assert {as_file(m) for m in runtime_imports(stage.module)} <= deps
    assert all((ROOT / f).is_file() for f in deps)


def test_code_deps_follow_lazy_imports_and_nothing_else():
    train, evaluate, stats = (set(wiring.code_deps(f"pipeline.{s}")) for s in ("train", "evaluate", "stats"))
    assert {"pipeline/engine.py", "pipeline/augment.py", "pipeline/models/resnet.py"} <= train   # imported in train()
    assert {"pipeline/inference.py", "pipeline/data.py", "pipeline/models/resnet.py"} <= evaluate
    # evaluate runs a model; it needs none of training's loop, recipes, resume state or DDP
    assert not {"pipeline/engine.py", "pipeline/recipes.py", "pipeline/resume.py", "pipeline/distributed.py",
                "pipeline/train.py"} & evaluate
    assert "pipeline/report/figures.py" in wiring.code_deps("pipeline.report")
    assert "pipeline/templates/report.html.j2" in wiring.code_deps("pipeline.report")
    assert not {"pipeline/engine.py", "pipeline/train.py", "pipeline/report/__init__.py"} & stats
    assert "pipeline/report/__init__.py" not in train


def test_each_job_depends_on_its_code_through_one_manifest():
    """configure digests every file a stage runs into one manifest per stage (per model for an
    experiment's stages; per job for replicate, whose DVC template knows only the experiment), and
    both tools take that file as the job's code dependency: one file in place of twenty, changed
    exactly when one of them is."""
    import hashlib
    from conftest import unit_params
    from pipeline import configure, imports
    assert configure.CODE_STAGES == {s.name: {"experiments": "model", "replicates": "exp"}.get(s.foreach)
                                     for s in wiring.RULES}
    params = unit_params()
    assert not [f for f in configure.code_files(params) if f.startswith("code/replicate/")]   # none replicated
    params["replicates"] = {"digits_lenet": 3, "digits_mlp": 2}
    manifests = configure.code_files(params)
    assert sorted(f for f in manifests if f.startswith("code/replicate/")) == [
        "code/replicate/digits_lenet.json", "code/replicate/digits_mlp.json"]
    families = imports.model_families()
    for stage in wiring.RULES:
        code = set(wiring.code_deps(stage.module))
        per = configure.CODE_STAGES[stage.name]
        jobs = {None: {None: None}, "model": {m: m for m in families},
                "exp": {e: params["experiments"][e]["model"]["name"] for e in params["replicates"]}}[per]
        for key, model in jobs.items():
            files = manifests[configure.code_manifest(stage.name).format(**({per: key} if per else {}))]
            own = {families[model]} if model else set()
            assert set(files) == code - (set(families.values()) - own), (stage.name, model)   # its family only
            assert all(h == hashlib.sha256((ROOT / f).read_bytes()).hexdigest() for f, h in files.items())
    dvc = yaml.safe_load(wiring.dvc_yaml())["stages"]
    assert [d for d in dvc["train"]["do"]["deps"] if d.startswith("pipeline")] == []
    assert "results/configs/code/train/${item.model.name}.json" in dvc["train"]["do"]["deps"]
    assert "results/configs/code/replicate/${key}.json" in dvc["replicate"]["do"]["deps"]
    assert "results/configs/code/report.json" in dvc["report"]["deps"]
    # configure digests them all, so under DVC any stage's code is configure's dependency; the tools' not
    assert set(wiring.configure_code()) >= set().union(*(wiring.code_deps(s.module) for s in wiring.STAGES))
    assert "pipeline/wiring.py" not in wiring.configure_code()


@pytest.mark.parametrize("stage", wiring.STAGES, ids=lambda s: s.name)
def test_no_stage_imports_or_runs_the_tools_wiring(stage):
    """The wiring builds the tools from the stages, never the other way: a stage that imported it
    would rerun on every edit of it, and one that ran it (`python -m pipeline.wiring`) would hide
    that dependency. The report after a failure is the report package's (pipeline/report/failure.py)."""
    code = wiring.code_deps(stage.module)
    assert not {"pipeline/wiring.py", "pipeline/lock.py", "pipeline/plan.py"} & set(code)
    for f in code:
        if f.endswith(".py"):
            assert not re.search(r"pipeline\.(wiring|lock|plan)|import (wiring|lock|plan)", (ROOT / f).read_text()), f


def test_conda_env_pins_the_same_packages_as_requirements():
    env = yaml.safe_load((ROOT / "envs/pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    reqs = [l for l in (ROOT / "envs/requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert pip == reqs


# ---- params.yaml under `dvc exp run -S` -------------------------------------------------------

def dvc_set(tmp_path: Path, *overrides: str) -> tuple[str, str]:
    """params.yaml before and after DVC's own -S rewrite (dvc.utils.hydra.apply_overrides)."""
    from dvc.utils.hydra import apply_overrides
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(str(path), list(overrides))
    return (ROOT / "params.yaml").read_text(), path.read_text()


def changed_lines(before: str, after: str) -> list[str]:
    return [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]


@pytest.mark.parametrize("value, expected", [("1e-5", 1e-5), ("0.00001", 1e-5), ("0.01", 0.01)])
def test_dvc_set_changes_one_line_and_the_number_reads_back(tmp_path, value, expected):
    before, after = dvc_set(tmp_path, f"lr={value}")
    diff = changed_lines(before, after)
    assert len(diff) == 2 and diff[0].startswith("-lr: ") and diff[1].startswith("+lr: "), diff
    assert "# float > 0. Learning rate" in diff[1]               # its comment kept
    assert P.load(tmp_path / "params.yaml")["lr"] == expected


def test_dvc_set_adds_a_per_experiment_override_and_keeps_every_comment(tmp_path):
    before, after = dvc_set(tmp_path, "+experiments.digits_mlp.lr=0.1")
    assert [l for l in changed_lines(before, after)] == ["+    lr: 0.1"]
    params = P.load(tmp_path / "params.yaml")
    assert P.experiment_config(params, "digits_mlp")["lr"] == 0.1
    assert P.experiment_config(params, "digits_lenet")["lr"] == params["lr"]


def test_yaml_1_2_numbers_as_people_and_dvc_write_them(tmp_path):
    text = re.sub(r"\nlr: \S+ ", "\nlr: 1e-3 ", (ROOT / "params.yaml").read_text(), count=1)
    (tmp_path / "params.yaml").write_text(text)
    assert P.load(tmp_path / "params.yaml")["lr"] == 0.001


# ---- the workspace lock --------------------------------------------------------------------------

@pytest.mark.parametrize("argv0, who", [("/venv/bin/dvc", "DVC"), ("/venv/bin/snakemake", "another snakemake")])
def test_snakemake_cannot_take_the_workspace_while_another_tool_holds_the_lock(tmp_path, argv0, who):
    """The line names which tool holds it: a second snakemake was told "DVC is running"."""
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    holder = subprocess.Popen(   # holds .dvc/tmp/lock the way DVC and Snakemake do (flock), until stdin closes
        [argv0, "-c", "import fcntl, os, sys; fd = os.open('.dvc/tmp/lock', os.O_RDWR | os.O_CREAT); "
                      "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"],
        executable=sys.executable, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.PipelineError) as e:
            lock.hold_workspace(tmp_path)
        assert str(e.value) == (f"{who} is running in this workspace (pid {holder.pid}: {argv0} -c import fcntl, "
                                f"os, sys; fd = os.open('.dvc/tmp/lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, "
                                f"fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read(); "
                                f"{tmp_path}/.dvc/tmp/lock is held); wait for it to finish, then run snakemake again")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_running_dvc_stage_is_seen_through_its_write_lock(tmp_path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    (tmp_path / ".dvc" / "tmp" / "rwlock").write_text(
        '{"write": {"/p/results/x": {"pid": %d, "cmd": "dvc repro"}, "/p/y": {"pid": 999999999, "cmd": "dvc old"}},'
        ' "read": {}}' % os.getpid())
    assert lock.dvc_writers(tmp_path / ".dvc") == ["dvc repro"]     # the dead pid's entry is stale


def test_the_snakefile_reports_bad_params_and_missing_sources_in_one_line(project):
    from conftest import run
    text = (project / "params.yaml").read_text()
    cases = [(text.replace("\nseed: 0 ", "\nlrr: 0.1\nseed: 0 ", 1), "error: params.yaml: (top level): "
              "Additional properties are not allowed ('lrr' was unexpected) (did you mean 'lr' for 'lrr'?)"),
             (text.replace("    source: {kind: sklearn_digits}",
                           "    source: {kind: folder, path: no/such/photos}\n    image_size: 8", 1),
              "error: datasets.digits.source.path: no/such/photos does not exist; put the images or archive "
              "there, or point source.path at them"),
             ("", "error: params.yaml: empty (no YAML in it); restore it from git: git checkout params.yaml"),
             (None, "error: params.yaml: file not found; restore it from git: git checkout params.yaml")]
    for params_text, line in cases:
        if params_text is None:
            (project / "params.yaml").unlink()
        else:
            (project / "params.yaml").write_text(params_text)
        r = run(["snakemake", "-n"], cwd=project, check=False)
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == line, r.stderr
        assert "Traceback" not in r.stderr and "File " not in r.stderr


def test_a_replicate_job_only_where_an_experiment_runs_more_than_once_under_both_tools(project):
    """DVC's foreach iterates `replicates:` itself (an empty mapping: no stage), and Snakemake asks
    for the replicate outputs of its entries only: the same jobs, planned by each tool."""
    from conftest import run
    from test_pipeline import edit_params, snakemake_jobs

    def planned() -> tuple[set[str], set[str]]:
        jobs = snakemake_jobs(run(["snakemake", "-n"], cwd=project).stdout)
        stages = {line.split()[0] for line in run(["dvc", "stage", "list"], cwd=project).stdout.splitlines()}
        return ({j for j in jobs if j.startswith("replicate")}, {s for s in stages if s.startswith("replicate")},
                len(jobs))
    sm, dvc, n = planned()
    assert sm == dvc == set() and n == 24          # the demo: download, prepare, stats, 10 x train/evaluate, report
    edit_params(project, lambda d: d.__setitem__("replicates", {"digits_lenet": 3}))
    sm, dvc, n = planned()
    assert sm == dvc == {"replicate@digits_lenet"} and n == 25


def import_graph() -> dict[str, set[str]]:
    """Every pipeline module -> the pipeline modules it imports (from the source, lazy imports too)."""
    from pipeline import imports
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in (ROOT / "pipeline").rglob("*.py")]
    return {m: imports.imported(m) for m in modules}


def test_the_pipeline_package_has_no_import_cycle():
    graph, state, path = import_graph(), {}, []

    def visit(m):                       # depth first; a module met again on the path is a cycle
        state[m] = "open"
        path.append(m)
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != "open", f"import cycle: {' -> '.join(path[path.index(n):] + [n])}"
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 30 and graph["pipeline.train"]          # the walk saw the package


def test_no_stage_computes_with_the_tools_wiring_or_imports_by_name():
    """Editing the tools' wiring (the stage table, the lock) retrains nothing: no stage's code
    depends on it, and no module hides an import from the scanner behind importlib."""
    tools = {"pipeline/wiring.py", "pipeline/lock.py"}
    for stage in wiring.STAGES:
        assert not tools & set(wiring.code_deps(stage.module)), stage.name
    for path in (ROOT / "pipeline").rglob("*.py"):
        text = path.read_text()
        assert "import_module(" not in text and "__import__(" not in text, path


@pytest.mark.parametrize("stage", wiring.STAGES, ids=lambda s: s.name)
def test_each_stage_parses_the_command_its_row_builds(stage):
    """Each module's parser is built from its row (ROW.parser) plus options of its own: for every
    row, the module requires no option the row lacks, and the exact command the tools run parses,
    each path landing under its option's name."""
    module = importlib.import_module(stage.module)
    assert module.ROW is stage
    ap = module.parser()
    required = {a.dest for a in ap._actions if a.required}
    assert required <= {*stage.deps, *stage.outs, *stage.args}, f"{stage.module} requires options its row lacks"
    fill = lambda kind, opt, template: f"<{opt}>"       # a path per option, named after it
    argv = shlex.split(wiring.command(stage, fill))[3:]   # after `python -m pipeline.<stage>`
    args = vars(ap.parse_args(argv))
    assert {opt: args[opt] for opt in [*stage.deps, *stage.outs]} == \
           {opt: Path(f"<{opt}>") for opt in [*stage.deps, *stage.outs]}
    assert {opt: str(args[opt]) for opt in stage.args} == stage.args


def test_make_clean_removes_what_the_pipeline_generated_and_nothing_a_user_placed(project, tmp_path):
    images = tmp_path / "my_images"
    images.mkdir()
    (images / "a.png").write_bytes(b"png")
    made = [project / p for p in ("data/raw/digits/x.npy", "results/experiments/e/model.pt", "logs/train/e.log",
                                  ".snakemake/metadata/m")]
    placed = project / "data/downloads/cifar-10-python.tar.gz"
    record = project / "dvc.lock"                  # DVC's record, which the user commits: kept
    for path in [*made, placed, record]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (project / "data/sources/pets").symlink_to(images)      # configure's link: part of the study, kept
    subprocess.run(["make", "clean"], cwd=project, check=True, capture_output=True)
    assert not [p for p in made if p.exists()] and (project / "data/sources/pets").resolve() == images
    assert placed.exists() and (images / "a.png").exists() and (project / "data/sources/digits").is_file()
    assert record.read_bytes() == b"x"


def test_a_run_is_handed_over_only_if_nothing_changed_under_it(tmp_path):
    """What the Snakefile's onsuccess checks before `dvc commit -f`: params.yaml still resolves to
    the configs the run wrote (a comment edit does), and no file of the code changed."""
    from conftest import TEST_PARAMS
    from pipeline.configure import configure
    params_path, configs, sources = tmp_path / "params.yaml", tmp_path / "results/configs", tmp_path / "data/sources"
    text = TEST_PARAMS.read_text()
    params_path.write_text(text)
    (tmp_path / "pipeline/models").mkdir(parents=True)
    (tmp_path / "pipeline/models/mlp.py").write_text("# code\n")
    sources.mkdir(parents=True)
    configure(P.load(params_path), configs, sources)
    at_start = lock.code_mtimes(tmp_path)
    assert list(at_start) == ["pipeline/models/mlp.py"]
    assert lock.edited_during_run(at_start, configs, sources, params_path) is None

    params_path.write_text(text + "# a comment changes no config\n")
    assert lock.edited_during_run(at_start, configs, sources, params_path) is None
    params_path.write_text(re.sub(r"\nlr: \S+", "\nlr: 0.0123", text, count=1))
    why = lock.edited_during_run(at_start, configs, sources, params_path)
    assert re.fullmatch(rf"{params_path} or a folder source changed during the run \({configs}/\S+\.json would change\)",
                        why), why
    params_path.write_text(text.replace("\nlr: ", "\nlrr: ", 1))
    assert lock.edited_during_run(at_start, configs, sources, params_path).startswith(
        f"{params_path} no longer reads ({params_path}: (top level): Additional properties")

    params_path.write_text(text)
    os.utime(tmp_path / "pipeline/models/mlp.py", ns=(0, at_start["pipeline/models/mlp.py"] + 10**9))
    assert lock.edited_during_run(at_start, configs, sources, params_path) == \
        "pipeline/models/mlp.py was edited during the run"


def test_snakemake_takes_over_only_what_dvc_records_as_current(tmp_path):
    """After `dvc checkout` every restored file is dated as copied: the take-over dates a job's
    outputs after its inputs exactly where dvc.lock records the job as current, in order (a job
    dated now makes its readers' inputs newer), and an input only Snakemake declares (a parent's
    checkpoint) only where the outputs' run.json names its content."""
    import hashlib
    import json
    from conftest import run
    (tmp_path / "in.txt").write_text("data\n")
    (tmp_path / "parent.pt").write_bytes(b"weights")
    (tmp_path / "child.py").write_text(
        "import hashlib, json, pathlib\n"
        "digest = hashlib.sha256(pathlib.Path('parent.pt').read_bytes()).hexdigest()\n"
        "pathlib.Path('run.json').write_text(json.dumps({'parent_sha256': digest}))\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "first": {"cmd": "cp in.txt a.txt", "deps": ["in.txt"], "outs": ["a.txt"]},
        "second": {"cmd": "python child.py", "deps": ["a.txt", "child.py"], "outs": ["run.json"]}}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        run(cmd, cwd=tmp_path)
    jobs = {"first": wiring.Job({"in.txt"}, {"a.txt"}, None),
            "second": wiring.Job({"a.txt", "child.py", "parent.pt"}, {"run.json"}, "parent.pt")}

    def date(**when):   # as a checkout leaves them: each file dated as copied, in any order
        for name, t in when.items():
            os.utime(tmp_path / name.replace("_", "."), (t, t))

    def in_order() -> bool:
        t = {p: plan.snakemake_mtime(tmp_path / p) for p in ("in.txt", "a.txt", "run.json", "parent.pt")}
        return t["in.txt"] <= t["a.txt"] <= t["run.json"] and t["parent.pt"] <= t["run.json"]

    date(in_txt=300, a_txt=100, child_py=50, run_json=200, parent_pt=50)
    assert plan.take_over_from_dvc(jobs, tmp_path) == ["first", "second"] and in_order()
    date(a_txt=100, run_json=200, parent_pt=400)          # the parent's checkpoint restored last
    assert plan.take_over_from_dvc(jobs, tmp_path) == ["first", "second"] and in_order()
    # retrained parent (new weights): its child was made from the old ones, whatever DVC records
    (tmp_path / "parent.pt").write_bytes(b"other weights")
    date(run_json=200, parent_pt=400)
    assert plan.take_over_from_dvc(jobs, tmp_path) == [] and not in_order()
    assert json.loads((tmp_path / "run.json").read_text())["parent_sha256"] != \
        hashlib.sha256(b"other weights").hexdigest()
    # an edited input: DVC does not record `first` as current, so neither is dated
    (tmp_path / "parent.pt").write_bytes(b"weights")
    (tmp_path / "in.txt").write_text("new data\n")
    date(in_txt=300, a_txt=100, run_json=200, parent_pt=50)
    assert plan.take_over_from_dvc(jobs, tmp_path) == [] and plan.snakemake_mtime(tmp_path / "a.txt") == 100
    (tmp_path / "dvc.lock").unlink()                       # no record: nothing to take over
    assert plan.take_over_from_dvc(jobs, tmp_path) == []
