"""What the report shows, as plain data: one record per experiment and per data set.

No plotting and no HTML here, so the numbers the report prints (leaderboard rows, differences from
the seeds' figures, most-confused pairs) are unit-testable on their own. Every reader tolerates a
missing or unreadable file: the experiment is then shown with its status, never dropped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import live
from pipeline.config import TrainConfig
from pipeline.params import ParamsError
from pipeline.report import verdict

log = logging.getLogger("pipeline.report")

# Files of one experiment directory, by the stage that writes them; the first of each carries the
# digest of the config it was made from (config_sha256).
STAGE_FILES = {"train": ("run.json", "train.json", "live", "layers.csv"),
               "evaluate": ("test.json", "per_class.csv", "predictions.csv", "confusion.csv")}
EXPERIMENT_FILES = tuple(f for files in STAGE_FILES.values() for f in files)
# The per-experiment stages, in order: their logs/<stage>/<exp>.log are read when outputs are missing
# (configure logs once for the study, in logs/configure.log: a failure there leaves no report to render)
LOG_STAGES = ("train", "evaluate", "replicate")


def _read(path: Path):
    if path.name == "live":     # the per-epoch log, a folder (pipeline/live.py)
        return live.read_history(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return pd.read_csv(path, index_col=0) if path.name == "confusion.csv" else pd.read_csv(path)


def _log_tail(logs: Path | None, exp: str, lines: int = 12) -> tuple[str | None, str | None]:
    """(path, last lines) of the latest stage log of `exp` that recorded an error, if any."""
    if logs is None:
        return None, None
    for stage_name in reversed(LOG_STAGES):
        path = logs / stage_name / f"{exp}.log"
        if path.exists():
            text = path.read_text(errors="replace")
            if "ERROR" in text or "Traceback" in text:
                return str(path), "\n".join(text.rstrip().splitlines()[-lines:])
    return None, None


REPLICATE_FILES = ("train.json", "run.json", "test.json", "live", "per_class.csv")   # what the spreads need


def _replicates(spec: dict, folder: Path, name: str) -> list[dict]:
    """The experiment's further runs that finished from the current configs (replicate stage's
    <folder>/<i>/): per run its train.json, test.json, epoch log (live/) and per_class.csv."""
    runs = []
    for i, digest in enumerate(spec.get("replicate_sha256", []), start=1):
        run = {"replicate": i}
        for f in REPLICATE_FILES:
            path = folder / str(i) / f
            try:
                run[f.replace(".", "_")] = _read(path) if path.exists() else None
            except (ValueError, OSError, pd.errors.ParserError) as e:
                log.warning("experiment %s: replicate %d: cannot read %s (%s)", name, i, path, e)
                run[f.replace(".", "_")] = None
        if run["train_json"] is not None and (run["test_json"] or {}).get("config_sha256") == digest:
            runs.append(run)
    return runs


def experiment(study: dict, name: str, results: Path, logs: Path | None = None) -> dict:
    """Everything the report needs about one experiment, with `status` saying how complete it is.

    status: "ok" (trained and evaluated), "not evaluated", "not trained", "failed" (a stage log
    recorded an error) or "unreadable" (an output exists but cannot be parsed).

    A stage's outputs made from another config than the study's current one (a failed or
    unfinished rerun leaves the previous config's files behind) are left out, never shown.
    """
    spec = study["experiments"][name]
    exp = {"name": name, "dataset": spec["dataset"], "model": spec["model"],
           "description": spec["description"], "reported": spec["reported"] or None,
           "rule": study["verdict"], "config": None, "dir": results / name, "problems": [], "finished": None}
    for f in EXPERIMENT_FILES:
        key = f.replace(".", "_")
        exp[key] = None
        path = results / name / f
        if path.exists():
            try:
                exp[key] = _read(path)
            except (ValueError, OSError, pd.errors.ParserError) as e:  # JSONDecodeError is a ValueError
                exp["problems"].append(f"{path}: cannot read ({e}); rerun the stage that writes it")
    current = spec.get("config_sha256")
    for stage_name, files in STAGE_FILES.items():
        record = exp[files[0].replace(".", "_")] or {}
        present = any(exp[f.replace(".", "_")] is not None for f in files)
        if current and present and record.get("config_sha256") != current:
            log.warning("experiment %s: the %s outputs in %s were made from another config: not shown",
                        name, stage_name, results / name)
            exp.update({f.replace(".", "_"): None for f in files})
    if exp["run_json"] is not None:   # what the run was configured with
        try:
            exp["config"] = TrainConfig.from_dict(exp["run_json"].get("config"), f"{results / name / 'run.json'}: config")
        except ParamsError as e:
            exp["problems"].append(str(e))
    exp["log_path"], exp["log_tail"] = _log_tail(logs, name)
    exp["replicates"] = _replicates(spec, results / name / "replicates", name)   # the replicate stage's runs
    exp["runs_wanted"] = 1 + len(spec.get("replicate_sha256", []))
    if exp["problems"]:
        exp["status"] = "unreadable"
    elif exp["train_json"] is not None and exp["test_json"] is not None:
        exp["status"] = "ok"
        exp["finished"] = dt.datetime.fromtimestamp((results / name / "test.json").stat().st_mtime, dt.timezone.utc)
    elif exp["log_tail"] is not None:
        exp["status"] = "failed"
    else:
        exp["status"] = "not evaluated" if exp["train_json"] is not None else "not trained"
    if exp["status"] != "ok":
        log.warning("experiment %s: %s%s", name, exp["status"],
                    f" (see {exp['log_path']})" if exp["log_path"] else "")
    return exp


def _pct(x) -> float | None:
    return None if x is None else 100.0 * float(x)


def _ours(exp: dict, split: str, metric: str):
    """Our figure for `metric` (top1 %, loss, train_loss) on `split`, from the kept checkpoint; top-1
    the mean over the runs, cut to an integer where the seed's figure was (`reported.truncated`)."""
    train, run, test = exp["train_json"] or {}, exp["run_json"] or {}, exp["test_json"] or {}
    config = exp["config"]    # None until trained
    if metric == "train_loss":
        return train.get("train_loss")
    if metric != "top1":
        return test.get("test_loss") if split == "test" else run.get("val_loss")
    values = run_values(exp, split)             # top-1: the mean over the finished runs
    ours = sum(values) / len(values) if values else None
    # a seed figure printed with %d stands for [X, X+1): ours cut the same way compares with it
    return math.floor(ours) if ours is not None and (exp["reported"] or {}).get("truncated") else ours


def _runs(exp: dict) -> list[dict]:
    """The experiment's own run (if trained and evaluated) and its finished further runs."""
    own = [exp] if exp["train_json"] is not None and exp["test_json"] is not None else []
    return own + exp["replicates"]


def run_values(exp: dict, split: str, metric: str = "top1") -> list[float]:
    """Per finished run: top-1 (%) or loss on `split` (val: the kept checkpoint's)."""
    values = []
    for run in _runs(exp):
        train, test = run["train_json"] or {}, run["test_json"] or {}
        if metric == "top1":
            value = _pct(test.get("test_acc") if split == "test" else train.get("val_acc"))
        else:
            value = test.get("test_loss") if split == "test" else None
        if value is not None:
            values.append(value)
    return values


def runs_table(exp: dict) -> list[dict]:
    """One row per finished run: its number (0: the experiment's own), seed, test top-1 (%) and
    loss, and the kept checkpoint's val accuracy (%)."""
    rows = []
    for run in _runs(exp):
        train, test = run["train_json"] or {}, run["test_json"] or {}
        rows.append({"run": run.get("replicate", 0), "seed": ((run["run_json"] or {}).get("config") or {}).get("seed"),
                     "test_top1": _pct(test.get("test_acc")), "test_loss": test.get("test_loss"),
                     "val_acc": _pct(train.get("val_acc"))})
    return rows


def top1_spread(exp: dict, split: str) -> verdict.Spread | None:
    """Our top-1 (%) on `split` over the experiment's runs: mean and interval (verdict.spread)."""
    return verdict.spread(run_values(exp, split), exp["rule"]["confidence"])


def leaderboard_row(exp: dict) -> dict:
    """One leaderboard row; accuracies in %. `reported` is the seed's top-1 on `reported_split`, and
    `diff` our top-1 on that same split minus it (points): val figures are compared with our val.
    `spread` is our top-1 on the compared split over the runs; `verdict` says whether the seed's
    figure is within it (pipeline/report/verdict.py), None without a seed figure."""
    train, run, test = exp["train_json"] or {}, exp["run_json"] or {}, exp["test_json"] or {}
    config = exp["config"]    # None until trained
    reported = exp["reported"] or {}
    split = reported.get("split")
    ours = _ours(exp, split, "top1") if split else None
    spread = top1_spread(exp, split or "test")
    judged = (verdict.verdict(spread, reported["top1"], exp["rule"]["allowance"], float(bool(reported.get("truncated"))))
              if split else None)
    return {
        "name": exp["name"], "dataset": exp["dataset"], "model": exp["model"], "status": exp["status"],
        "n_params": run.get("parameter_count"), "n_trainable": run.get("trainable_parameter_count"),
        "epochs_run": train.get("epochs_run"),
        "max_epochs": config and config.epochs, "kept_epoch": train.get("epoch"),
        "checkpoint": config and config.checkpoint, "stopped_early": bool(run.get("stopped_early")),
        "val_acc": _pct(train.get("val_acc")), "test_acc": _pct(test.get("test_acc")),
        "test_top5": _pct(test.get("test_top5")), "test_loss": test.get("test_loss"),
        "test_mode": config and config.test_mode,
        "test_acc_eval_mode": _pct(test.get("test_acc_eval_mode")),   # scored in train mode: eval mode's too
        "train_time_s": train.get("train_time_s"), "reported": reported.get("top1"), "reported_split": split,
        "reported_truncated": bool(reported.get("truncated")), "reported_peak": bool(reported.get("peak")),
        "compared": ours if split else _pct(test.get("test_acc")),   # ours on the seed's split, else test
        "diff": None if ours is None else ours - reported["top1"],
        "spread": spread, "verdict": judged,
        "test_spread": top1_spread(exp, "test"), "runs": len(_runs(exp)), "runs_wanted": exp.get("runs_wanted", 1),
        "test_loss_spread": verdict.spread(run_values(exp, "test", "loss"), exp["rule"]["confidence"]),
    }


SEED_METRICS = (("top1", "top-1 accuracy (%)"), ("loss", "loss (cross-entropy)"), ("train_loss", "train loss"))


def seed_comparison(exp: dict) -> list[dict]:
    """Every figure the seed gives for this experiment beside ours on the same split and metric."""
    reported = exp["reported"]
    if not reported:
        return []
    rows = []
    for metric, label in SEED_METRICS:
        if metric in reported:
            split = "train" if metric == "train_loss" else reported["split"]
            ours = _ours(exp, reported["split"], metric)
            diff = None if ours is None else ours - reported[metric]
            rows.append({"metric": label, "split": split, "seed": reported[metric], "ours": ours, "diff": diff,
                         "better": diff is not None and (diff >= 0 if metric == "top1" else diff <= 0),
                         "format": "%.2f" if metric == "top1" else "%.4f"})
    return rows


def per_class_comparison(exp: dict) -> tuple[list[dict], list[str]]:
    """(rows of class, seed %, ours %, difference; problems) where the seed lists per-class figures;
    ours cut to an integer as the seed's were where they were printed with %d
    (`reported.per_class_truncated`), so that the difference compares like with like."""
    reported = exp["reported"] or {}
    seed = reported.get("per_class")
    if not seed:
        return [], []
    cut = math.floor if reported.get("per_class_truncated") else float
    ours = {c: cut(a) for c, a in per_class(exp)}
    unknown = [c for c in seed if ours and c not in ours]
    problems = [f"reported.per_class names {', '.join(unknown)}, not classes of {exp['dataset']} "
                f"({', '.join(sorted(ours)[:10])}...); use the data set's class names"] if unknown else []
    return [{"class": c, "seed": v, "ours": ours.get(c),
             "diff": None if ours.get(c) is None else ours[c] - v} for c, v in seed.items()], problems


def ablations(exps: list[dict]) -> dict[str, list[dict]]:
    """Each experiment that changes another (`reported.base`) against that base, grouped by source:
    the seed's accuracy change beside ours, both on the seed's split (points), and the verdict on
    it: ours over the runs' paired differences (run i of each: the same seed)."""
    by_name = {e["name"]: e for e in exps}
    tables: dict[str, list[dict]] = {}
    for e in exps:
        reported = e["reported"] or {}
        if "base" not in reported:
            continue
        base = by_name[reported["base"]]
        split = reported["split"]
        base_seed = (base["reported"] or {}).get("top1")
        ours, ours_base = _ours(e, split, "top1"), _ours(base, split, "top1")
        child, parent = top1_spread(e, split), top1_spread(base, split)
        deltas = (verdict.spread([c - b for c, b in zip(child.values, parent.values)], e["rule"]["confidence"])
                  if child and parent else None)
        # two cut figures (%d): the seed's change lies within (d - 1, d + 1)
        cut = bool(reported.get("truncated")) and bool((base["reported"] or {}).get("truncated"))
        judged = None if base_seed is None else verdict.verdict(
            deltas, reported["top1"] - base_seed - (1.0 if cut else 0.0), e["rule"]["allowance"] * math.sqrt(2),
            width=2.0 if cut else 0.0)
        tables.setdefault(reported.get("source", "").split(",")[0] or "ablations", []).append({
            "name": e["name"], "base": base["name"], "change": reported.get("change", ""), "split": split,
            "seed": reported["top1"], "seed_base": base_seed, "ours": ours, "ours_base": ours_base,
            "seed_delta": None if base_seed is None else reported["top1"] - base_seed,
            "ours_delta": None if ours is None or ours_base is None else ours - ours_base,
            "spread": deltas, "verdict": judged})
    return tables


def most_confused(confusion: pd.DataFrame, n: int = 10) -> list[dict]:
    """The n largest off-diagonal cells of a confusion matrix (rows true, columns predicted).

    share: the fraction of the true class's test images that went to that wrong class.
    Ties are broken by class order so that the table is the same on every run.
    """
    cm = confusion.to_numpy()
    classes = [str(c) for c in confusion.index]
    totals = cm.sum(1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    order = sorted(zip(-off[true_idx, pred_idx], true_idx, pred_idx))[:n]
    return [{"true": classes[t], "pred": classes[p], "count": int(-c),
             "share": float(-c / totals[t]) if totals[t] else 0.0} for c, t, p in order]


def per_class(exp: dict) -> list[tuple[str, float]]:
    """(class, accuracy %) pairs, worst first, each the mean over the finished runs; ties in class
    order. A class the test split lacks has no accuracy and is left out."""
    tables = [run["per_class_csv"] for run in _runs(exp) if run["per_class_csv"] is not None]
    if not tables:
        return []
    table = tables[0][tables[0]["images"] > 0]
    mean = pd.concat([t.set_index("class")["accuracy"] for t in tables], axis=1).mean(axis=1)
    return sorted(((str(c), 100.0 * float(mean[c])) for c in table["class"]), key=lambda ca: ca[1])


def per_class_half_widths(exp: dict) -> dict[str, float]:
    """Per class, the half-width (points) of the t interval of its accuracy over the runs (none below 2 runs)."""
    tables = [run["per_class_csv"] for run in _runs(exp) if run["per_class_csv"] is not None]
    if len(tables) < 2:
        return {}
    accs = pd.concat([t.set_index("class")["accuracy"] for t in tables], axis=1).dropna()
    return {str(c): verdict.spread(100 * row.to_numpy(), exp["rule"]["confidence"]).half_width
            for c, row in accs.iterrows()}


def histories(exp: dict) -> list[pd.DataFrame]:
    """The epochs of every finished run (the experiment's own first; accuracies in %)."""
    own = [exp["live"]] if exp["live"] is not None else []
    return own + [run["live"] for run in exp["replicates"] if run["live"] is not None]


def prediction_sample(predictions: pd.DataFrame, n_random: int = 8, n_mistakes: int = 8,
                      seed: int = 0) -> dict[str, pd.DataFrame]:
    """A seeded random sample of test predictions and a seeded sample of the mistakes.

    The random draw depends only on the test set's size, so every experiment of a data set
    shows the same images and they can be compared side by side.
    """
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(predictions), size=min(n_random, len(predictions)), replace=False))
    wrong = predictions[predictions["true"] != predictions["pred"]]
    wrong_pick = np.sort(rng.permutation(len(wrong))[:n_mistakes])
    return {"random": predictions.iloc[pick], "mistakes": wrong.iloc[wrong_pick]}


def dataset(name: str, prepared: Path, stats: Path) -> dict:
    """A data set's meta, normalisation stats and per-split class counts, or what is missing."""
    ds = {"name": name, "dir": prepared / name, "meta": None, "stats": None, "problems": [],
          "class_counts": {}}
    for key, path in (("meta", prepared / name / "meta.json"), ("stats", stats / f"{name}.json")):
        try:
            ds[key] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            ds["problems"].append(f"{path}: {'missing' if isinstance(e, FileNotFoundError) else e}; "
                                  f"run the {'prepare' if key == 'meta' else 'stats'} stage for {name}")
    if ds["meta"]:
        k = len(ds["meta"]["classes"])
        for split in ("train", "val", "test"):
            path = prepared / name / f"{split}_labels.npy"
            if path.exists():
                ds["class_counts"][split] = np.bincount(np.load(path), minlength=k)
    return ds


def load_images(ds: dict, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, H, W, C) uint8 memory-mapped, labels (N,)) of a split, or None if not prepared."""
    images, labels = ds["dir"] / f"{split}_images.npy", ds["dir"] / f"{split}_labels.npy"
    if not (images.exists() and labels.exists()):
        return None
    return np.load(images, mmap_mode="r"), np.load(labels)


# The tools' record of the results, not code: Snakemake's hand-over writes it after the report is
# rendered, so counting it would make every report of a fresh clone say "clean" while git does not.
RECORDS = ("dvc.lock",)


def code_version(root: Path) -> dict:
    """The git commit of `root` and whether the working tree has uncommitted changes (to the code,
    params and data definitions: the tools' RECORDS are not counted)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"commit": None, "dirty": None, "note": f"git not available ({e})"}
    if head.returncode != 0:
        return {"commit": None, "dirty": None, "note": f"{root} is not a git repository (or has no commit yet)"}
    status = git("status", "--porcelain")
    changed = [line[3:] for line in status.stdout.splitlines() if line[3:] not in RECORDS]
    return {"commit": head.stdout.strip(), "dirty": bool(changed), "changed": changed[:20],
            "n_changed": len(changed), "note": ""}


def environments(exps: list[dict]) -> list[dict]:
    """Distinct software/hardware combinations the experiments trained on, with who used each."""
    envs: dict[tuple, dict] = {}
    for e in exps:
        if e["run_json"] is None:
            continue
        v = e["run_json"].get("versions", {})
        env = {k: v.get(k) for k in ("python", "torch", "torchvision", "cuda", "platform")}
        env["device"] = e["run_json"].get("device")
        env["device_name"] = v.get("device_name")
        envs.setdefault(tuple(env.items()), {**env, "experiments": []})["experiments"].append(e["name"])
    return list(envs.values())


def summary(exps: list[dict], ablation_tables: dict[str, list[dict]]) -> dict:
    """results/summary.json, the study's DVC metrics (`dvc exp show`, `dvc metrics diff`): the verdict
    counts, then per experiment its mean test top-1 (%) and the interval's half-width (null for a
    single run: its spread is unknown; DVC then shows no column for it). Column names such as
    `test_top1.digits_mlp`: DVC drops the file name when one file holds the metrics, and
    `experiments.<name>.*` are params.yaml's."""
    def tally(verdicts) -> dict[str, int]:
        return {label.replace(" ", "_"): n for label, n in verdict.counts(verdicts).items()}

    def rounded(x):
        return None if x is None else round(x, 4)
    out = {"seed_figures": tally(e["row"]["verdict"] for e in exps if e["row"]["verdict"]),
           "ablation_changes": tally(r["verdict"] for rows in ablation_tables.values() for r in rows
                                     if r["verdict"]), "test_top1": {}, "test_top1_ci": {}}
    for e in exps:
        spread = top1_spread(e, "test")
        out["test_top1"][e["name"]] = rounded(spread and spread.mean)
        out["test_top1_ci"][e["name"]] = rounded(spread and spread.half_width)
    return out
