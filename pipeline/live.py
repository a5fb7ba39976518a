"""A training run's per-epoch log, written through DVCLive after every epoch into <run>/live/:

    metrics.json              the latest epoch: train.loss, train.acc, train.lr, val.loss, val.acc
                              (accuracies in %) and step (= the epoch). `dvc exp show` lists it, also
                              while `dvc exp run` trains; the train stage declares it as DVC metrics.
    plots/custom/loss.json    every epoch so far, one file per chart of `dvc plots show` (and of DVC's
    plots/custom/accuracy.json  VS Code extension and Studio): train and val on one chart, the
    plots/custom/lr.json      accuracies in %, whole epochs; the train stage declares them as plots.

The files are the run's whole history: the report reads its curves from them (read_history). Both
tools have them as the train stage's outputs, file by file (FILES), never the folder.
Offline by default: DVCLive posts to Studio only where the user configured a Studio token.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

# name -> (title, y label, template in .dvc/plots/): what `dvc plots show` draws per run, one chart a
# file. Rows are long: {"epoch", "split", <name>}, and the template dashes by split (train solid, val
# dashed), as DVC's stage-level plots take one y field per file.
PLOTS = {
    "loss": ("loss (train: its objective; val: cross-entropy)", "loss", "epochs"),
    "accuracy": ("accuracy (%)", "accuracy (%)", "epochs_percent"),
    "lr": ("learning rate", "lr", "epochs"),
}
# engine's history row -> (file, split); accuracies are fractions there, % here
FIELDS = {"train_loss": ("loss", "train"), "val_loss": ("loss", "val"), "train_acc": ("accuracy", "train"),
          "val_acc": ("accuracy", "val"), "lr": ("lr", "train")}
SUMMARY = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
           "lr": "train/lr"}     # metrics.json: {"train": {"loss", "acc", "lr"}, "val": {"loss", "acc"}, "step"}
SUMMARY_FILE = "metrics.json"


def plot_file(name: str) -> str:
    return f"plots/custom/{name}.json"


FILES = (SUMMARY_FILE, *(plot_file(name) for name in PLOTS))    # what a run writes, relative to its folder


def plot_props(name: str, run: str) -> dict:
    """The `plots:` entry of one file in dvc.yaml, its title led by `run` (the experiment)."""
    title, y_label, template = PLOTS[name]
    return {"x": "epoch", "y": name, "template": template, "title": f"{run}: {title}",
            "x_label": "epoch", "y_label": y_label}


def _shown(key: str, value: float | None) -> float | None:
    return None if value is None else round(100 * value, 6) if key.endswith("_acc") else value


def _live_class():
    from dvclive import Live

    class RunLive(Live):
        def _init_dvc(self):
            """DVCLive's own runs `dvc init` in a Git repository without .dvc/ (a Snakemake-only
            checkout): only under DVC (DVC_ROOT, set by `dvc repro` / `dvc exp run`) is it needed."""
            if os.getenv("DVC_ROOT"):
                super()._init_dvc()
    return RunLive


def open_log(folder: Path):
    """A fresh log in `folder` (DVCLive empties what an earlier run left there)."""
    logging.getLogger("dvclive").setLevel(logging.WARNING)   # not its "Logging to experiment <random name>"
    return _live_class()(dir=str(folder), save_dvc_exp=False, dvcyaml=None)


def log_epochs(live, history: list[dict]) -> None:
    """Write the epochs so far (engine's history rows): the plots' files whole, the summary of the
    last one. Called after every epoch, and with the whole history when a run resumes. A figure
    that is None (no val split) is left out."""
    live.step = history[-1]["epoch"]
    for key, name in SUMMARY.items():
        if history[-1][key] is not None:
            live.log_metric(name, _shown(key, history[-1][key]), plot=False)
    for name, (title, y_label, template) in PLOTS.items():
        points = [{"epoch": row["epoch"], "split": split, name: _shown(key, row[key])}
                  for row in history for key, (file, split) in FIELDS.items() if file == name and row[key] is not None]
        live.log_plot(name, points, x="epoch", y=name, template=template, title=title, x_label="epoch", y_label=y_label)
    live.make_summary()


def remove(folder: Path) -> None:
    """A failed run's log: gone, so that no half-run history is taken for a finished one."""
    shutil.rmtree(folder, ignore_errors=True)


def read_history(folder: Path):
    """The run's epochs as one frame: epoch and FIELDS' keys (accuracies in %, a missing val figure
    NaN). Raises ValueError where a file is missing or damaged, or the files' epochs disagree."""
    import pandas as pd
    plots = Path(folder) / "plots" / "custom"
    wide = {}
    for name in PLOTS:
        path = Path(folder) / plot_file(name)
        try:
            wide[name] = pd.DataFrame(json.loads(path.read_text())).pivot(index="epoch", columns="split", values=name)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: cannot read ({e!r}); rerun the stage that writes it") from None
    if not all(w.index.equals(wide["loss"].index) for w in wide.values()):
        raise ValueError(f"{plots}: its files hold different epochs; rerun the stage that writes them")
    return pd.DataFrame({key: wide[file].get(split, float("nan")) for key, (file, split) in FIELDS.items()},
                        index=wide["loss"].index).rename_axis("epoch").reset_index()
