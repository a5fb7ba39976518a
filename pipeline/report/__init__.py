"""Stage report: render results/report.html, the study as a person reads it, and
results/summary.json, the study's DVC metrics (what `dvc exp show` and `dvc metrics diff` list).

    python -m pipeline.report --study results/configs/study.json --results results/experiments \
        --prepared data/prepared --stats data/stats --out results/report.html \
        --summary results/summary.json [--logs logs]

Reads, per experiment of the study (study.json, written by configure), <results>/<experiment>/
{train.json, run.json, live/ (the epochs), layers.csv, test.json, per_class.csv, predictions.csv,
confusion.csv}, and per data set <prepared>/<ds>/ and <stats>/<ds>.json. One self-contained HTML
file (figures embedded, no network needed). A missing or failed experiment is shown with its status
(and its stage log's last lines when --logs is given); it does not break the report.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
from pathlib import Path

from pipeline import stage

log = logging.getLogger("pipeline.report")
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _experiment_figures(exp: dict, test_images, draw: bool = True) -> None:
    """Adds the experiment's tables and (if `draw`) figures in place; a broken input becomes a
    listed problem."""
    from pipeline.report import collect, figures
    exp["per_class"] = collect.per_class(exp)
    exp["runs_table"] = collect.runs_table(exp)
    exp["seed_rows"] = collect.seed_comparison(exp)
    exp["seed_per_class"], problems = collect.per_class_comparison(exp)
    exp["problems"] += problems
    exp["figures"], exp["pairs"], exp["samples"] = {}, None, None
    if not draw:
        return
    try:
        if collect.histories(exp):
            exp["figures"]["curves"] = figures.experiment_curves(collect.histories(exp), exp["row"]["kept_epoch"])
        if exp["per_class"]:
            exp["figures"]["per_class"] = figures.per_class_bars(exp["per_class"], collect.per_class_half_widths(exp))
        if exp["confusion_csv"] is not None:
            exp["pairs"] = collect.most_confused(exp["confusion_csv"], n=15)
            if len(exp["confusion_csv"]) <= 30:   # beyond that a grid is unreadable: pairs only
                exp["figures"]["confusion"] = figures.confusion_heatmap(exp["confusion_csv"])
        if exp["predictions_csv"] is not None and test_images is not None:
            images = test_images[0]
            if len(images) != len(exp["predictions_csv"]):
                exp["problems"].append(
                    f"predictions.csv has {len(exp['predictions_csv'])} rows but the prepared test split "
                    f"has {len(images)} images; rerun evaluate for {exp['name']}")
            else:
                exp["samples"] = {kind: [dict(r, uri=figures.thumbnail(images[r["index"]]))
                                         for r in df.to_dict("records")]
                                  for kind, df in collect.prediction_sample(exp["predictions_csv"]).items()}
    except Exception as e:  # noqa: BLE001  one malformed output must not take the whole report down
        log.warning("experiment %s: cannot draw its figures: %r", exp["name"], e)
        exp["problems"].append(f"cannot draw figures from {exp['dir']}: {e!r}; rerun its train/evaluate stages")


def build_context(study: dict, results: Path, prepared: Path, stats: Path, logs: Path | None,
                  root: Path, draw: bool = True) -> dict:
    """Everything the template renders: overview, leaderboard, per data set, per experiment; the
    figures only if `draw` (they take most of the time)."""
    from pipeline.report import collect, figures, verdict
    exps = [collect.experiment(study, name, results, logs) for name in study["experiments"]]
    for e in exps:
        e["row"] = collect.leaderboard_row(e)
    datasets = []
    for ds_name in dict.fromkeys(e["dataset"] for e in exps):   # order of first use in params.yaml
        ds = collect.dataset(ds_name, prepared, stats)
        ds_exps = [e for e in exps if e["dataset"] == ds_name]
        test_images = collect.load_images(ds, "test") if draw else None
        for e in ds_exps:
            _experiment_figures(e, test_images, draw)
        ds["experiments"] = [e["name"] for e in ds_exps]
        ds["bars"] = ds["curves"] = ds["samples"] = None
        if draw:
            ds["bars"] = figures.accuracy_bars([e["row"] for e in ds_exps])
            with_history = {e["name"]: collect.histories(e) for e in ds_exps if collect.histories(e)}
            objectives = {e["name"]: figures.objective(e["config"]) for e in ds_exps}
            ds["curves"] = figures.dataset_curves(with_history, objectives) if with_history else None
            train = collect.load_images(ds, "train")
            ds["samples"] = (figures.class_samples(*train, ds["meta"]["classes"])
                             if train is not None and ds["meta"] else None)
        datasets.append(ds)
    tables = collect.ablations(exps)
    summary = collect.summary(exps, tables)
    rows = [e["row"] for e in exps]
    finished = [e["finished"] for e in exps if e["finished"]]
    times = [e["row"]["train_time_s"] for e in exps if e["row"]["train_time_s"] is not None]
    return {
        "generated": dt.datetime.now(dt.timezone.utc), "study": study["study"], "smoke": study.get("smoke", False),
        "experiments": exps, "datasets": datasets, "ablations": tables, "summary": summary,
        "verdict_rule": verdict.RULE.format(**study["verdict"]), "rule": study["verdict"],
        "headline": verdict.headline(verdict.counts(e["row"]["verdict"] for e in exps if e["row"]["verdict"])),
        "code": collect.code_version(root), "environments": collect.environments(exps),
        "first_finished": min(finished, default=None), "last_finished": max(finished, default=None),
        "total_train_s": sum(times), "n_ok": sum(e["status"] == "ok" for e in exps),
        "report_python": platform.python_version(), "figures": draw,
        "shown": shown_columns(rows), "best": best_on_test(rows),
    }


def shown_columns(rows: list[dict]) -> dict[str, bool]:
    """Which leaderboard columns and notes say something for this study: the seed's figure, diff and
    verdict only where some experiment has one; test top-5 only where most experiments score under
    100 on it (with few classes, or an easy data set, it reads 100.0 nearly throughout and tells the
    experiments apart no better than top-1); replicates, cut and peak figures only where used."""
    top5 = [r["test_top5"] for r in rows if r["test_top5"] is not None]
    return {"seed": any(r["reported"] is not None for r in rows),
            "top5": sum(v < 99.95 for v in top5) > len(top5) / 2,
            "replicates": any(r["runs_wanted"] > 1 for r in rows),
            "cut": any(r["reported_truncated"] for r in rows), "peak": any(r["reported_peak"] for r in rows)}


def best_on_test(rows: list[dict]) -> dict | None:
    """The experiment with the highest mean test top-1, for the overview's line where a study has
    no published figure to reproduce (ties: the first in params.yaml's order)."""
    scored = [r for r in rows if r["test_spread"] is not None]
    return max(scored, key=lambda r: r["test_spread"].mean, default=None)


def _fmt_pct(x, signed: bool = False) -> str:
    return "—" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def _fmt_verdict(v) -> str:
    """A verdict as a coloured word, with how far off: 'below by 2.3'; — without a seed figure."""
    from markupsafe import Markup, escape
    if v is None:
        return Markup("—")
    how = f" by {v.by:.1f}" if v.label in ("above", "below") else ""
    return Markup(f'<span class="v-{v.label.replace(" ", "-")}">{escape(v.label)}{how}</span>')


def _fmt_duration(s) -> str:
    if s is None:
        return ""
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def render(context: dict) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_fmt_pct, duration=_fmt_duration, verdict=_fmt_verdict,
                       thousands=lambda n: "" if n is None else f"{n:,}",
                       utc=lambda t: "" if t is None else t.strftime("%Y-%m-%d %H:%M UTC"))
    return env.get_template("report.html.j2").render(**context)


def report(study: dict, results: Path, prepared: Path, stats: Path, out: Path, summary: Path | None = None,
           logs: Path | None = None, root: Path = Path("."), draw: bool = True) -> dict:
    """Render the report to `out` and, when given, the study's DVC metrics to `summary`."""
    import json
    context = build_context(study, results, prepared, stats, logs, root, draw)
    html = render(context)
    with stage.atomic_path(out) as tmp:
        tmp.write_text(html)
    if summary is not None:
        with stage.atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(context["summary"], indent=1) + "\n")
    log.info("wrote %s (%.0f kB; %d experiments, %d complete)", out, len(html.encode()) / 1e3,
             len(context["experiments"]), context["n_ok"])
    return context


def render_despite_failure(root: Path = Path(".")) -> None:
    """Render the report stage's output (ROW's paths, under `root`) from whatever exists, failures
    shown with their stage's one line; then date it 1970, so that neither tool takes it as current
    (DVC has no record of it; Snakemake sees it older than every input) and the next run rebuilds
    it. Tables only, no figures: it is rendered while the failing stage (or Snakemake, holding the
    workspace) waits, and the next successful run draws them. Never raises: the failure being
    reported matters more. Called by the Snakefile's onerror, and by a failing train, evaluate or
    replicate stage as `python -m pipeline.report.failure` (DVC has no onerror)."""
    import os
    paths = {opt: root / (dep.path if isinstance(dep, stage.Gather) else dep) for opt, dep in ROW.deps.items()}
    out = root / ROW.outs["out"].path
    try:
        report(stage.read_json(paths["study"]), paths["results"], paths["prepared"], paths["stats"], out,
               logs=root / "logs", root=root.resolve(), draw=False)
        os.utime(out, (1, 1))   # 1, not 0: Snakemake takes an mtime of 0 for none at all
        log.info("rendered %s with the failure shown (dated 1970: the next run rebuilds it)", out)
    except Exception as e:  # noqa: BLE001
        log.warning("could not render the report after the failure: %r", e)


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "report", None,
    deps={"study": "results/configs/study.json",
          "results": stage.Gather("results/experiments", ("train", "evaluate", "replicate")),
          "prepared": stage.Gather("data/prepared", ("prepare",)), "stats": stage.Gather("data/stats", ("stats",))},
    outs={"out": stage.Out("results/report.html", report="study"),
          "summary": stage.Out("results/summary.json", "metric", report="study")},
    help={"study": "study.json, as configure writes it",
          "results": "folder of per-experiment folders (further runs in <exp>/replicates/)",
          "prepared": "folder of prepared data sets", "stats": "folder of <dataset>.json stats",
          "summary": "the study's DVC metrics: verdict counts, each experiment's mean test top-1 and interval"})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    ap = ROW.parser(__doc__)
    ap.add_argument("--logs", type=Path, help="folder of stage logs, to show why an experiment failed")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    report(stage.read_json(args.study), args.results, args.prepared, args.stats, args.out, args.summary,
           args.logs, root=Path(".").resolve())


if __name__ == "__main__":
    stage.cli(main)
