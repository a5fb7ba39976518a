"""A fabricated study for the report's tests and size benchmark: real file formats, no training.

    python scripts/report_fixture.py OUT_DIR [--experiments 23]
    cd OUT_DIR && python -m pipeline.report --study results/configs/study.json \
        --results results/experiments --prepared data/prepared --stats data/stats --out results/report.html

Writes OUT_DIR/params.yaml (the project's own params with synthetic `datasets`/`experiments`),
results/configs/ (as the configure stage writes it, study.json included), data/prepared/<ds>/,
data/stats/<ds>.json and results/experiments/<exp>/ exactly as the prepare, stats, train and
evaluate stages lay them out, with known numbers the tests can check against.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import configure, live  # noqa: E402
from pipeline import params as params_mod  # noqa: E402

# name -> (classes, image size, channels, test images): shaped like the study's real data sets
SHAPES = {"digits": (10, 8, 1, 60), "cifar10": (10, 32, 3, 100), "cifar100": (100, 32, 3, 400),
          "tiny": (200, 64, 3, 400)}
VERSIONS = {"python": "3.11", "torch": "2.11", "torchvision": "0.26", "numpy": "2.3", "cuda": None,
            "platform": "Linux", "device_name": "cpu"}


def write_dataset(root: Path, name: str, n_classes: int, size: int, channels: int, n_test: int,
                  n_train_per_class: int = 8) -> np.ndarray:
    """Random images with balanced labels; returns the test labels."""
    rng = np.random.default_rng(len(name))
    d = root / "data" / "prepared" / name
    d.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_train_per_class * n_classes, "val": 2 * n_classes, "test": n_test}
    for split, n in counts.items():
        labels = np.arange(n) % n_classes
        np.save(d / f"{split}_labels.npy", labels.astype(np.int64))
        np.save(d / f"{split}_images.npy", rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8))
    classes = [f"class_{k:03d}" if n_classes > 10 else str(k) for k in range(n_classes)]
    (d / "meta.json").write_text(json.dumps({"classes": classes, "image_size": [size, size],
                                             "channels": channels, "counts": counts, "source": {"kind": "fake"}}))
    stats = root / "data" / "stats"
    stats.mkdir(parents=True, exist_ok=True)
    (stats / f"{name}.json").write_text(json.dumps({"mean": [0.5] * channels, "std": [0.29] * channels}))
    return np.arange(n_test) % n_classes


def write_experiment(root: Path, name: str, labels: np.ndarray, classes: list[str], wrong_every: int,
                     config: dict, epochs_run: int | None = None, stopped_early: bool | None = None,
                     folder: Path | None = None) -> dict:
    """Outputs of train + evaluate where every `wrong_every`-th test image is predicted as the next class.

    `config` is the experiment's resolved config (what run.json records; its `epochs` is the budget).
    The run trains `epochs_run` epochs (default: the whole budget); `stopped_early` defaults to what
    the train stage writes (fewer epochs run than configured) and can be forced to test the reader.
    `folder`: where to write instead of results/experiments/<name> (a replicate's results/experiments/<name>/replicates/<i>).
    """
    d = folder or root / "results" / "experiments" / name
    d.mkdir(parents=True, exist_ok=True)
    k, epochs_run = len(classes), epochs_run or config["epochs"]
    pred = labels.copy()
    pred[::wrong_every] = (labels[::wrong_every] + 1) % k
    cm = np.zeros((k, k), int)
    np.add.at(cm, (labels, pred), 1)
    acc = float((pred == labels).mean())
    ep = np.arange(1, epochs_run + 1)
    epochs_log = live.open_log(d / "live")
    history = pd.DataFrame({"epoch": ep, "train_loss": 2 / ep, "train_acc": 1 - 0.5 / ep, "val_loss": 2.2 / ep,
                            "val_acc": acc - 0.3 / ep, "lr": 0.05}).to_dict("records")
    for epoch in ep:
        live.log_epochs(epochs_log, history[:epoch])
    # train.json: scalars only (what `dvc exp show` lists); run.json: what the run was
    train = {"epoch": epochs_run, "val_acc": acc - 0.3 / epochs_run, "train_loss": 2 / epochs_run,
             "epochs_run": epochs_run, "train_time_s": 1.5 * wrong_every}
    (d / "train.json").write_text(json.dumps(train, indent=1))
    meta = root / "data" / "prepared" / config.get("dataset", "") / "meta.json"
    size = ([config["input_size"]] * 2 if config.get("input_size")
            else json.loads(meta.read_text())["image_size"] if meta.is_file() else None)
    run = {"val_loss": 2.2 / epochs_run, "train_acc": 1 - 0.5 / epochs_run, "stopped_early": epochs_run < config["epochs"] if stopped_early is None else stopped_early,
           "parameter_count": 1000 * wrong_every, "trainable_parameter_count": 1000 * wrong_every, "input_size": size,
           "device": "cpu", "config": config, "config_sha256": params_mod.config_hash(config),
           "versions": dict(VERSIONS)}
    (d / "run.json").write_text(json.dumps(run, indent=1))
    # test.json: scalars only; per_class.csv: accuracy (a fraction) and test images per class
    test = {"test_acc": acc, "test_top5": min(1.0, acc + 0.05), "test_loss": 1 - acc,
            "config_sha256": params_mod.config_hash(config)}
    (d / "test.json").write_text(json.dumps(test, indent=1))
    per_class = {c: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(classes)}
    pd.DataFrame({"class": classes, "accuracy": list(per_class.values()), "images": cm.sum(1)}
                 ).to_csv(d / "per_class.csv", index=False)
    pd.DataFrame({"index": np.arange(len(labels)), "true": labels, "pred": pred,
                  "true_name": np.asarray(classes)[labels], "pred_name": np.asarray(classes)[pred]}
                 ).to_csv(d / "predictions.csv", index=False)
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(d / "confusion.csv")
    return {"test_acc": acc, "train": train, "run": run, "test": test, "per_class": per_class}


def write_params(root: Path, datasets: list[str], experiments: dict[str, dict]) -> dict:
    """The project's params.yaml as study `report_fixture` with these data sets and experiments (model
    spec of the demo's first)."""
    params = params_mod.load(ROOT / "params.yaml")
    model = next(iter(params["experiments"].values()))["model"]
    params["study"] = "report_fixture"
    params["datasets"] = {ds: {"source": {"kind": "sklearn_digits"}, "test_fraction": 0.2, "val_fraction": 0.2,
                               "split_seed": 0} for ds in datasets}
    params["experiments"] = {name: {"dataset": spec["dataset"], "model": dict(model),
                                    **{k: v for k, v in spec.items() if k != "dataset"}}
                             for name, spec in experiments.items()}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params_mod.load(root / "params.yaml")


def reported_figure(i: int, first: str) -> dict | None:
    """Experiment i's seed figure: a test one with losses and per-class figures (i % 4 == 0), a val
    one (1), an ablation step on test, changing the first experiment (2), or none (3)."""
    if i % 4 == 0:
        return {"split": "test", "top1": 70.0 + i, "loss": 0.5, "train_loss": 0.25, "source": f"fixture {i}",
                "per_class": {"0": 90.0, "1": 50.0}}
    if i % 4 == 1:
        return {"split": "val", "top1": 70.0 + i, "source": f"fixture {i}"}
    if i % 4 == 2:
        return {"split": "test", "top1": 70.0 + i, "source": f"fixture {i}, step {i}", "base": first,
                "change": f"change {i}"}
    return None


def make_study(root: Path, n_experiments: int = 3, datasets: tuple[str, ...] = ("digits",)) -> dict:
    """n experiments spread over `datasets`, with distinct accuracies; every other one has a reported
    figure, alternately on test (with losses and per-class figures) and on val (an ablation of the first).

    Returns {"params": the params written, "study": the study dict the report takes (configure's
    study.json, also written to results/configs/), "truth": per experiment what was written}.
    """
    root.mkdir(parents=True, exist_ok=True)
    labels = {ds: write_dataset(root, ds, *SHAPES[ds]) for ds in datasets}
    specs = {}
    for i in range(n_experiments):
        ds = datasets[i % len(datasets)]
        specs[f"{ds}_exp{i:02d}"] = {"dataset": ds, "description": f"fake experiment {i}",
                                     **({"reported": reported_figure(i, first=f"{datasets[0]}_exp00")}
                                        if reported_figure(i, "") else {})}
    params = write_params(root, list(datasets), specs)
    configure.configure(params, root / "results" / "configs", root / "data" / "sources")
    truth = {}
    for i, (name, spec) in enumerate(specs.items()):   # every fake run trains its full budget
        classes = json.loads((root / "data/prepared" / spec["dataset"] / "meta.json").read_text())["classes"]
        truth[name] = write_experiment(root, name, labels[spec["dataset"]], classes, wrong_every=3 + i,
                                       config=params_mod.experiment_config(params, name))
    return {"params": params, "study": configure.config_files(params)["study.json"], "truth": truth}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--experiments", type=int, default=23)
    args = ap.parse_args()
    make_study(args.out, args.experiments, tuple(SHAPES))
    print(f"wrote a fake study of {args.experiments} experiments to {args.out}")
