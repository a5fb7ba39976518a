"""Stage replicate: an experiment's further runs (`replicates: {<exp>: N}`), seeds seed + 1 .. seed + N - 1.

    python -m pipeline.replicate --config results/configs/replicates/digits_mlp.json \
        --first results/experiments/digits_mlp/run.json --out results/experiments/digits_mlp/replicates \
        --prepared data/prepared --stats data/stats --experiments results/experiments

One job per experiment of `replicates:` (none for the others). --config lists the runs' resolved
configs, as configure writes them. Each run is trained and evaluated by the train and evaluate
stages' own commands, from the experiment's data set in --prepared and --stats, so <out>/<i>/ holds
exactly the files of a one-run experiment (model.pt, live/, train.json, run.json, layers.csv,
test.json, per_class.csv, predictions.csv, confusion.csv), plus the run's config.json. Run 0 is the
experiment's own (its train and evaluate jobs); the report takes the mean and interval over all N.

--first is run 0's run.json, the job's dependency on its data: DVC iterates `replicates:`, whose
items are run counts, so its template cannot name the experiment's data set, but run.json holds
the digest of the data run 0 was trained on (`data_sha256`), which changes whenever that data set's
prepared files or stats do. The further runs must be made from the same data: a digest that differs
from the data found now is an error (run 0 is out of date: run its train job first).

One job per experiment, not per run: DVC's `foreach` expands one mapping from params.yaml, and a
per-experiment count cannot become a list there (no nested foreach; `matrix` is a cross product of
lists). So that raising N trains only the new runs, each run is made in the hidden sibling
`.<out>.runs/<i>/` and kept there with the digest of everything it was made from (its config, the
normalisation stats, the prepared data's bytes, the train and evaluate code): a run whose digest
still matches is not trained again, whichever tool reruns the job, and a stopped job goes on from
the runs it finished (and from the epoch where the unfinished one stopped: its resume state is
there too). <out> is then made whole from hard links to those runs: no second copy on disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import evaluate, stage, train
from pipeline.config import TrainConfig

DONE = "done"   # in a finished run's folder: the digest of what it was made from


def _files(row: stage.Stage, folder: Path) -> list[str]:
    """The row's output options, each pointing at its file name inside `folder`."""
    return [arg for opt, out in row.outs.items() for arg in (f"--{opt}", str(folder / Path(out.path).name))]


def commands(config: Path, prepared: Path, stats: Path, folder: Path, experiments: Path, logs: Path) -> list[list[str]]:
    """The train and evaluate commands of one run, writing into `folder`."""
    python = [sys.executable, "-m"]
    return [[*python, train.ROW.module, "--config", str(config), "--prepared", str(prepared), "--stats", str(stats),
             *_files(train.ROW, folder), "--experiments", str(experiments), "--log", str(logs / "train.log")],
            [*python, evaluate.ROW.module, "--model", str(folder / "model.pt"), "--prepared", str(prepared),
             *_files(evaluate.ROW, folder), "--log", str(logs / "evaluate.log")]]


def _run(cmd: list[str], config: TrainConfig) -> None:
    proc = subprocess.Popen(cmd)
    with stage.on_signal(proc.kill):     # a stopped job stops its run too
        code = proc.wait()
    if code != 0:
        raise stage.PipelineError(f"replicate {config.replicate} of {config.name}: {cmd[2]} failed (exit {code}); "
                                  f"its error is above and in {cmd[-1]}; the runs finished so far are kept")


def replicate(runs: list[TrainConfig], first: dict, prepared: Path, stats: Path, out: Path, experiments: Path,
              logs: Path | None = None) -> list[Path]:
    """Train and evaluate each run into <out>/<i>/ (their stage logs under <logs>/<i>/) from the
    data set `prepared` and its `stats`, which must be run 0's (`first`, its run.json); return the
    run folders."""
    from pipeline import resume   # torch is imported only once there is work to do
    staging = out.with_name(f".{out.name}.runs")
    data_sha256 = resume.data_digest(stage.read_json(stats), prepared)
    if first.get("data_sha256") != data_sha256:
        raise stage.PipelineError(
            f"{runs[0].name}: its own run (run.json) was not trained on the data in {prepared} and {stats} as they "
            f"are now; run its train job first (snakemake or dvc repro do), then this one")
    for config in runs:
        folder = staging / str(config.replicate)
        key = run_key(config, data_sha256)
        if (folder / DONE).is_file() and (folder / DONE).read_text() == key:
            stage.log.info("replicate %s of %s: finished earlier, kept", config.replicate, config.name)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE).unlink(missing_ok=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        stage.log.info("replicate %s of %s: seed %s", config.replicate, config.name, config.seed)
        run_logs = logs / str(config.replicate) if logs else folder / ".logs"
        for cmd in commands(folder / "config.json", prepared, stats, folder, experiments, run_logs):
            _run(cmd, config)
        (folder / DONE).write_text(key)
    with stage.atomic_path(out) as tmp:
        tmp.mkdir()
        for config in runs:
            shutil.copytree(staging / str(config.replicate), tmp / str(config.replicate),
                            ignore=shutil.ignore_patterns(DONE, ".*"), copy_function=os.link)
    return [out / str(c.replicate) for c in runs]


def run_key(config: TrainConfig, data_sha256: str) -> str:
    """What a run's outputs are made from: training's resume key (config, data, train code) and the
    evaluate stage's code."""
    import hashlib
    from pipeline import imports, resume
    h = hashlib.sha256(resume.run_key(config, data_sha256).encode())
    for name in imports.code_deps(evaluate.ROW.module):
        h.update(name.encode() + (imports.ROOT / name).read_bytes())
    return h.hexdigest()


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "replicate", "replicates", gpus="devices",
    deps={"config": "results/configs/replicates/{exp}.json", "first": "results/experiments/{exp}/run.json"},
    outs={"out": stage.Out("results/experiments/{exp}/replicates", directory=True)},
    # the data set is the config's (`dataset`); parents' checkpoints: `pretrained: <exp>`
    args={"prepared": "data/prepared", "stats": "data/stats", "experiments": "results/experiments"},
    help={"config": "the runs' configs, as configure writes them", "first": "run.json of the experiment's own run",
          "out": "folder of one folder per run", "prepared": "folder of prepared data sets",
          "stats": "folder of <dataset>.json stats", "experiments": "folder of other experiments' checkpoints"})


def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    spec = stage.read_json(args.config)
    runs = [TrainConfig.from_dict(run, source=f"{args.config}: runs[{i}]") for i, run in enumerate(spec["runs"])]
    if not runs:
        raise stage.PipelineError(f"{args.config}: no runs; an experiment runs more than once only where "
                                  f"params.yaml's replicates: lists it, and configure writes this file then")
    dataset = runs[0].dataset
    replicate(runs, stage.read_json(args.first), args.prepared / dataset, args.stats / f"{dataset}.json", args.out,
              args.experiments, args.log.with_suffix("") if args.log else None)


if __name__ == "__main__":
    stage.cli(main, on_failure=stage.failure_report)
