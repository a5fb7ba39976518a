"""Stage report: render results/report.html from every experiment's train and evaluate outputs.

    python -m pipeline.report --params params.yaml --results results --out results/report.html

Reads, per experiment of params.yaml, <results>/<experiment>/{train.json,test.json,history.csv}.
An experiment whose outputs are missing is shown as missing; it does not break the report.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import logging
from pathlib import Path

import jinja2

from pipeline import params as params_mod
from pipeline import stage

log = logging.getLogger("pipeline.report")
TEMPLATES = Path(__file__).with_name("templates")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect(params: dict, results: Path) -> list[dict]:
    """One row per experiment: what ran, its numbers, and its history (or what is missing)."""
    import pandas as pd
    rows = []
    for name, exp in params["experiments"].items():
        d = results / name
        train, test = _read_json(d / "train.json"), _read_json(d / "test.json")
        history = pd.read_csv(d / "history.csv") if (d / "history.csv").exists() else None
        row = {"name": name, "dataset": exp["dataset"], "model": exp["model"]["name"],
               "description": exp.get("description", ""), "reported": exp.get("reported"),
               "config": params_mod.experiment_config(params, name),
               "missing": [f for f, v in (("train.json", train), ("test.json", test)) if v is None],
               "history": history}
        if train:
            row.update(epochs_run=train["epochs_run"], best_val_acc=100 * train["best_val_acc"],
                       train_time_s=train["train_time_s"], n_params=train["params"],
                       versions=train["versions"], device=train["device"])
        if test:
            row.update(test_acc=100 * test["test_acc"], test_top5=100 * test["test_top5"],
                       test_loss=test["test_loss"])
            if row["reported"] is not None:
                row["delta"] = row["test_acc"] - row["reported"]
        rows.append(row)
    return rows


def curves_png(rows: list[dict]) -> str | None:
    """Learning curves of every experiment that has a history, as a base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [r for r in rows if r["history"] is not None]
    if not runs:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in runs:
        h = r["history"]
        line, = ax_loss.plot(h["epoch"], h["train_loss"], label=f"{r['name']} train")
        ax_loss.plot(h["epoch"], h["val_loss"], "--", color=line.get_color(), label=f"{r['name']} val")
        ax_acc.plot(h["epoch"], 100 * h["val_acc"], color=line.get_color(), label=r["name"])
    ax_loss.set(xlabel="epoch", ylabel="loss", title="train (solid) and val (dashed) loss")
    ax_acc.set(xlabel="epoch", ylabel="val accuracy (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render(rows: list[dict], generated: str) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(rows=rows, curves=curves_png(rows), generated=generated)


def report(params: dict, results: Path, out: Path) -> None:
    rows = collect(params, results)
    html = render(rows, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    with stage.atomic_path(out) as tmp:
        tmp.write_text(html)
    log.info("wrote %s (%d experiments, %d missing)", out, len(rows), sum(bool(r["missing"]) for r in rows))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    params = params_mod.load(args.params)
    files = [args.results / e / f for e in params["experiments"]
             for f in ("train.json", "test.json", "history.csv") if (args.results / e / f).exists()]
    key_config = {"experiments": params["experiments"], "defaults": {k: params[k] for k in params_mod.training_keys()}}
    stage.run_stage("report", key_config, files, [args.out], lambda: report(params, args.results, args.out))


if __name__ == "__main__":
    stage.cli(main)
