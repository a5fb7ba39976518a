"""Stage replicate: an experiment's further runs (`replicates: N`), seeds seed + 1 .. seed + N - 1.

    python -m pipeline.replicate --config results/configs/replicates/digits_mlp.json \
        --prepared data/prepared/digits --stats data/stats/digits.json \
        --out results/replicates/digits_mlp --experiments results/experiments

--config lists the runs' resolved configs, as configure writes them (none when N = 1: the folder is
then empty). Each run is trained and evaluated by the train and evaluate stages' own commands, so
<out>/<i>/ holds exactly the files of a one-run experiment (model.pt, live/, train.json,
run.json, layers.csv, test.json, per_class.csv, predictions.csv, confusion.csv), plus the run's
config.json. Run 0 is the experiment's own (its train and evaluate jobs); the report takes the mean
and interval over all N.

One job per experiment, not per run: DVC's `foreach` expands one list from params.yaml, and a
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


def replicate(runs: list[TrainConfig], prepared: Path, stats: Path, out: Path, experiments: Path,
              logs: Path | None = None) -> list[Path]:
    """Train and evaluate each run into <out>/<i>/ (their stage logs under <logs>/<i>/); return the
    run folders."""
    staging = out.with_name(f".{out.name}.runs")
    if runs:
        stats_json = json.loads(Path(stats).read_text())
    for config in runs:
        folder = staging / str(config.replicate)
        key = run_key(config, stats_json, prepared)
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


def run_key(config: TrainConfig, stats: dict, prepared: Path) -> str:
    """What a run's outputs are made from: training's resume key (config, stats, training data,
    train code), the test split and the evaluate stage's code."""
    import hashlib
    from pipeline import imports, resume   # torch is imported only once there is work to do
    h = hashlib.sha256(resume.run_key(config, stats, prepared).encode())
    for name in ("test_images.npy", "test_labels.npy"):
        with open(Path(prepared) / name, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    for name in imports.code_deps(evaluate.ROW.module):
        h.update(name.encode() + (imports.ROOT / name).read_bytes())
    return h.hexdigest()


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "replicate", "experiments", gpus="devices",
    deps={"config": "results/configs/replicates/{exp}.json", "prepared": stage.DS, "stats": "data/stats/{dataset}.json"},
    outs={"out": stage.Out("results/replicates/{exp}", directory=True)},
    args={"experiments": "results/experiments"},      # parents' checkpoints (`pretrained: <exp>`)
    help={"config": "the runs' configs, as configure writes them", "out": "folder of one folder per run",
          "experiments": "folder of other experiments' checkpoints"})


def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    spec = stage.read_json(args.config)
    runs = [TrainConfig.from_dict(run, source=f"{args.config}: runs[{i}]") for i, run in enumerate(spec["runs"])]
    replicate(runs, args.prepared, args.stats, args.out, args.experiments,
              args.log.with_suffix("") if args.log else None)


if __name__ == "__main__":
    stage.cli(main, on_failure=stage.failure_report)
