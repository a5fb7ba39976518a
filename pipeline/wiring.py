"""The tools' wiring: both orchestrators built from the stages' rows. Each stage module declares
its row (`ROW`, a pipeline.stage.Stage: command options, dependencies, outputs, params) beside its
code; this module lists them, adds the code each stage really imports, and writes the tools' side:

    python -m pipeline.wiring dvc.yaml     # writes dvc.yaml (a test fails when the committed one differs)
    Snakefile                              # builds its rules from the same table at parse time
    python -m pipeline.wiring --preview    # what snakemake, and what dvc repro, would run now

No stage's own code imports this module: the tools' wiring is no part of what a stage computes,
so editing it retrains nothing (editing a stage's row edits that stage's module, and reruns it).

Path templates use {ds} (a data set), {exp} (an experiment) and {dataset} (that experiment's data
set). Every stage is `python -m pipeline.<name>` with one `--<option> <path>` per dependency and
output, then `--log`; it reads no other file (params.yaml reaches the stages as the configs that
the configure stage resolves from it).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from pipeline import configure, download, evaluate, imports, live, prepare, replicate, report, stats, train
from pipeline.stage import Gather, Out, Stage
from pipeline.params import training_value

ROOT, PACKAGE = imports.ROOT, imports.PACKAGE
code_deps = imports.code_deps


# The rows: each stage module declares its own (ROW), beside the code it describes.
STAGES: list[Stage] = [m.ROW for m in (configure, download, prepare, stats, train, evaluate, replicate, report)]
BY_NAME = {s.name: s for s in STAGES}
RULES = [s for s in STAGES if s.name != "configure"]   # Snakemake's jobs (it configures at parse time)
CONFIGS = configure.ROW.outs["out"].path


def code_dep(stage: Stage) -> str:
    """The path template of a job's code manifest (configure writes it): {model} is the model of
    the job's experiment."""
    return f"{CONFIGS}/{configure.code_manifest(stage.name)}"


def configure_code() -> tuple[str, ...]:
    """The code configure runs: its own, and all it digests into the other stages' manifests, so
    that under DVC an edit of any stage's code reruns configure, which rewrites that manifest."""
    return tuple(sorted({f for s in STAGES for f in code_deps(s.module)}))


# ---- command lines ----------------------------------------------------------------------------

def command(stage: Stage, fill) -> str:
    """`python -m pipeline.<stage> --opt path ...`; `fill(kind, option, template)` renders each path."""
    parts = [f"python -m {stage.module}"]
    parts += [f"--{opt} {fill('gather', opt, dep.path) if isinstance(dep, Gather) else fill('input', opt, dep)}"
              for opt, dep in stage.deps.items()]
    parts += [f"--{opt} {fill('live' if out.kind == 'live' else 'output', opt, out.path)}"
              for opt, out in stage.outs.items()]
    parts += [f"--{opt} {value}" for opt, value in stage.args.items()]
    parts.append(f"--log {fill('log', 'log', stage.log)}")
    return " ".join(parts)


# ---- dvc.yaml ------------------------------------------------------------------------------

def _dvc_path(template: str) -> str:
    return (template.replace("{ds}", "${key}").replace("{exp}", "${key}").replace("{dataset}", "${item.dataset}")
            .replace("{model}", "${item.model.name}"))


def package_deps(files: tuple[str, ...]) -> list[str]:
    """The code deps with every sub-package the stage imports whole written as its folder: the same
    content to DVC (.dvcignore leaves out __pycache__), one `dvc exp show` column instead of ten."""
    files, packages = set(files), set()
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        if folder == PACKAGE:
            continue
        members = {str(p.relative_to(ROOT)) for p in folder.glob("*.py")}
        if members <= files:
            files -= members
            packages.add(str(folder.relative_to(ROOT)))
    return sorted(files | packages)


def files(out: Out) -> list[str]:
    """The path templates of an output's files: a DVCLive folder's (pipeline/live.py), else its own."""
    return [f"{out.path}/{f}" for f in live.FILES] if out.kind == "live" else [out.path]


def dvc_stage(stage: Stage) -> dict:
    body: dict = {"cmd": command(stage, lambda kind, opt, t: _dvc_path(t))}
    deps = [_dvc_path(d.path if isinstance(d, Gather) else d) for d in stage.deps.values()]
    body["deps"] = deps + (package_deps(configure_code()) if stage.name == "configure" else [_dvc_path(code_dep(stage))])
    if stage.params:
        body["params"] = [{path: None} for path in stage.params]
    entries: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for o in stage.outs.values():
        path = _dvc_path(o.path)
        if o.kind == "live":      # a DVCLive folder: its summary is metrics, its plot files plots
            entries["metrics"].append(f"{path}/{live.SUMMARY_FILE}")
            entries["plots"] += [{f"{path}/{live.plot_file(name)}": live.plot_props(name, _dvc_path(stage.key))}
                                 for name in live.PLOTS]
        else:
            entries[{"out": "outs", "metric": "metrics"}[o.kind]].append({path: {"persist": True}} if o.persist else path)
    body.update({key: value for key, value in entries.items() if value})
    if stage.foreach:
        return {"foreach": "${" + stage.foreach + "}", "do": body}
    return body


DVC_HEADER = """\
# Generated from pipeline/wiring.py by `python -m pipeline.wiring dvc.yaml`: edit that file, not this.
# The same stages as the Snakefile; every output is cached, so `dvc exp`, `dvc push/pull`,
# `dvc checkout` and DVC's run-cache cover all of them (configure, persistent, is rerun instead).
#   dvc repro    dvc exp run -S lr=0.01    dvc exp show    dvc plots show
"""


def dvc_yaml() -> str:
    import yaml
    stages = {s.name: dvc_stage(s) for s in STAGES}
    # params.yaml named outright: without it DVC says "Could not find 'datasets'" (the foreach below)
    body = yaml.safe_dump({"vars": ["params.yaml"], "stages": stages}, sort_keys=False, width=1000)
    return DVC_HEADER + body


# ---- Snakemake ---------------------------------------------------------------------------------

class Snakemake:
    """What the Snakefile needs of a stage, for the study in `params`."""

    def __init__(self, params: dict):
        self.params = params

    def _fill(self, template: str, wildcards) -> str:
        exp = getattr(wildcards, "exp", None)
        entry = self.params["experiments"][exp] if exp else {"dataset": None, "model": {"name": None}}
        return template.format(ds=getattr(wildcards, "ds", None), exp=exp, dataset=entry["dataset"],
                               model=entry["model"]["name"])

    def _input_function(self, template: str):
        return lambda wildcards: self._fill(template, wildcards)

    def all_outputs(self, name: str) -> list[str]:
        stage = BY_NAME[name]
        keys = self.params[stage.foreach] if stage.foreach else [None]
        w = stage.wildcard
        return [f.format(**({w: k} if w else {})) for k in keys for out in stage.outs.values() for f in files(out)]

    def inputs(self, name: str) -> dict:
        """Named inputs (functions of the job's wildcards) plus the manifest of the code it runs."""
        stage, inputs = BY_NAME[name], {}
        for opt, dep in stage.deps.items():
            if isinstance(dep, Gather):
                inputs[opt] = [f for s in dep.stages for f in self.all_outputs(s)]
            else:
                inputs[opt] = self._input_function(dep)
        extra = EXTRA_INPUTS.get(stage.name)
        if extra:
            inputs["extra"] = lambda wildcards: extra(self.params, wildcards)
        inputs["code"] = self._input_function(code_dep(stage))
        return inputs

    def resources(self, stage: Stage) -> dict:
        """The `gpu` resource a job takes (`--resources gpu=K` runs at most K GPUs' worth at once)."""
        if stage.gpus == "devices":   # `devices: N` trains on N GPUs (DDP), so takes N
            return {"gpu": lambda wildcards: training_value(self.params, wildcards.exp, "devices")}
        return {"gpu": stage.gpus} if stage.gpus else {}

    def threads(self, wildcards) -> int:
        """CPU threads a train/evaluate job takes (the scheduler's count; the job itself sets its
        config's `threads`, so the numbers never depend on what Snakemake grants)."""
        value = training_value(self.params, wildcards.exp, "threads")
        return len(os.sched_getaffinity(0)) if value == "auto" else value

    @staticmethod
    def outputs(name: str) -> dict:
        """Named outputs; those a row marks `report` flagged for Snakemake's own report."""
        from snakemake.io import directory, report
        stage = BY_NAME[name]
        sub = "{exp}" if stage.wildcard == "exp" else None

        def flagged(o):
            path = directory(o.path) if o.directory else o.path
            return report(path, category=o.report, subcategory=sub) if o.report else path
        named = {}
        for opt, o in stage.outs.items():
            if o.kind == "live":     # its files, one output each (as DVC has them), never the folder
                named.update({f"{opt}_{Path(f).stem}": flagged(Out(f, report=o.report)) for f in files(o)})
            else:
                named[opt] = flagged(o)
        return named

    @staticmethod
    def shell(stage: Stage) -> str:
        def fill(kind, opt, template):
            live_folder = template.replace("{exp}", "{wildcards.exp}")      # its files are the outputs
            return {"log": "{log}", "gather": template, "live": live_folder}.get(kind, f"{{{kind}.{opt}}}")
        return command(stage, fill)


# Dependencies only Snakemake can declare: DVC's foreach cannot add one to some entries only.
def _parent_checkpoint(params: dict, wildcards) -> list[str]:
    """`pretrained: <experiment>`: that experiment's checkpoint. (DVC: its config and data set
    entry are part of this experiment's config instead; see params.experiment_config.)"""
    parent = training_value(params, wildcards.exp, "pretrained")
    return [] if parent in (None, "imagenet") else [f"results/experiments/{parent}/model.pt"]


# (The same for the replicate job: its runs' configs carry the parent's, so DVC reruns it exactly
# then too.)
EXTRA_INPUTS = {"train": _parent_checkpoint, "replicate": _parent_checkpoint}


# ---- what an edit of params.yaml reruns ------------------------------------------------------

class Job(NamedTuple):
    reads: set[str]         # the paths it reads (under Snakemake: its inputs)
    writes: set[str]        # the paths it writes
    parent: str | None      # a `pretrained: <experiment>` parent's checkpoint: an input Snakemake alone declares


def jobs(params: dict) -> dict[str, Job]:
    """Every job of the study but configure, named as DVC names them (`train@digits_mlp`, `report`),
    each after the jobs whose outputs it reads. A parent's checkpoint counts as its child's input
    (Snakemake declares it; under DVC the child's config carries the parent's)."""
    from types import SimpleNamespace
    study, found = Snakemake(params), {}
    for stage in RULES:
        keys = params[stage.foreach] if stage.foreach else [None]
        gathered = {f for opt, dep in stage.deps.items() if isinstance(dep, Gather)
                    for s in dep.stages for f in study.all_outputs(s)}
        for key in keys:
            w = SimpleNamespace(**({stage.wildcard: key} if key else {}))
            reads = gathered | {study._fill(dep, w) for dep in [*stage.deps.values(), code_dep(stage)]
                                if not isinstance(dep, Gather)}
            parent = EXTRA_INPUTS[stage.name](params, w) if stage.name in EXTRA_INPUTS and key else []
            writes = {study._fill(f, w) for o in stage.outs.values() for f in files(o)}
            found[f"{stage.name}@{key}" if key else stage.name] = Job(reads | set(parent), writes, next(iter(parent), None))
    return found


def preview(params: dict, configs: Path, sources: Path, root: Path = Path(".")) -> dict[str, list[str] | None]:
    """What each tool would run now, with params.yaml as it is: {"snakemake": jobs, "dvc": stages},
    each in the tool's order; "dvc" None outside a DVC repository. Nothing is written: configure's
    files are taken as it is about to write them (pipeline.plan)."""
    from pipeline import plan
    from pipeline.configure import changes
    write, _ = changes(params, configs, sources)   # (a file it removes belongs to no job of the study)
    future = {str(path): value for path, value in write.items()}
    graph = jobs(params)
    return {"snakemake": plan.walk(graph, root, future)[1],
            "dvc": plan.dvc_runs(graph, root, future) if (root / ".dvc").is_dir() else None}


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", help="where to write dvc.yaml (default: print it)")
    ap.add_argument("--preview", action="store_true",
                    help="list what `snakemake` and what `dvc repro` would run now, each on a line; writes nothing")
    args = ap.parse_args(argv)
    if args.preview:
        from pipeline import params as params_mod
        plans = preview(params_mod.load("params.yaml"), Path("results/configs"), Path("data/sources"))
        for tool, runs in (("snakemake", plans["snakemake"]), ("dvc repro", plans["dvc"])):
            print(f"{tool}: " + ("not a DVC repository" if runs is None else " ".join(runs) or "nothing to run"))
        return
    text = dvc_yaml()
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    from pipeline.stage import cli
    cli(main)      # a bad params.yaml: the one line the tools give
