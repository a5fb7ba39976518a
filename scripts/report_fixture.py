"""A fabricated study for the report's tests and size benchmark: real file formats, no training.

    python scripts/report_fixture.py OUT_DIR [--experiments 23]     # then run the report on OUT_DIR

Writes OUT_DIR/params.yaml (the project's own params with synthetic `datasets`/`experiments`),
data/prepared/<ds>/, data/stats/<ds>.json and results/experiments/<exp>/ exactly as the prepare,
stats, train and evaluate stages lay them out, with known numbers the tests can check against.
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
from pipeline import params as params_mod  # noqa: E402

# name -> (classes, image size, channels, test images): shaped like the study's real data sets
SHAPES = {"digits": (10, 8, 1, 60), "cifar10": (10, 32, 3, 100), "cifar100": (100, 32, 3, 400),
          "tiny": (200, 64, 3, 400)}


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
                     epochs: int = 6, epochs_run: int | None = None, **train_extra) -> dict:
    """Outputs of train + evaluate where every `wrong_every`-th test image is predicted as the next class."""
    d = root / "results" / "experiments" / name
    d.mkdir(parents=True, exist_ok=True)
    k, epochs_run = len(classes), epochs_run or epochs
    pred = labels.copy()
    pred[::wrong_every] = (labels[::wrong_every] + 1) % k
    cm = np.zeros((k, k), int)
    np.add.at(cm, (labels, pred), 1)
    acc = float((pred == labels).mean())
    ep = np.arange(1, epochs_run + 1)
    pd.DataFrame({"epoch": ep, "train_loss": 2 / ep, "train_acc": 1 - 0.5 / ep, "val_loss": 2.2 / ep,
                  "val_acc": acc - 0.3 / ep, "lr": 0.05}).to_csv(d / "history.csv", index=False)
    train = {"best_epoch": epochs_run, "best_val_acc": acc - 0.3 / epochs_run, "best_val_loss": 2.2 / epochs_run,
             "epochs_run": epochs_run, "train_time_s": 1.5 * wrong_every, "params": 1000 * wrong_every,
             "device": "cpu", "config": {}, "versions": {"python": "3.11", "torch": "2.11", "torchvision": "0.26",
                                                         "cuda": None, "device_name": "cpu", "platform": "Linux"},
             **train_extra}
    (d / "train.json").write_text(json.dumps(train))
    per_class = {c: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(classes)}
    test = {"test_loss": 1 - acc, "test_acc": acc, "test_top5": min(1.0, acc + 0.05), "per_class_acc": per_class,
            "best_epoch": epochs_run, "n_test": len(labels), "config": {}, "versions": train["versions"]}
    (d / "test.json").write_text(json.dumps(test))
    pd.DataFrame({"index": np.arange(len(labels)), "true": labels, "pred": pred,
                  "true_name": np.asarray(classes)[labels], "pred_name": np.asarray(classes)[pred]}
                 ).to_csv(d / "predictions.csv", index=False)
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(d / "confusion.csv")
    return {"test_acc": acc, "train": train, "test": test}


def write_params(root: Path, datasets: list[str], experiments: dict[str, dict]) -> dict:
    """The project's params.yaml with these data sets and experiments (model spec of the demo's first)."""
    params = params_mod.load(ROOT / "params.yaml")
    model = next(iter(params["experiments"].values()))["model"]
    params["datasets"] = {ds: {"source": {"kind": "sklearn_digits"}, "test_fraction": 0.2, "val_fraction": 0.2,
                               "split_seed": 0} for ds in datasets}
    params["experiments"] = {name: {"dataset": spec["dataset"], "model": dict(model),
                                    **{k: v for k, v in spec.items() if k != "dataset"}}
                             for name, spec in experiments.items()}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params_mod.load(root / "params.yaml")


def make_study(root: Path, n_experiments: int = 3, datasets: tuple[str, ...] = ("digits",)) -> dict:
    """n experiments spread over `datasets`, with distinct accuracies; every other one has a reported figure."""
    root.mkdir(parents=True, exist_ok=True)
    labels = {ds: write_dataset(root, ds, *SHAPES[ds]) for ds in datasets}
    specs, truth = {}, {}
    epochs = params_mod.load(ROOT / "params.yaml")["epochs"]   # every fake run trains its full budget
    for i in range(n_experiments):
        ds = datasets[i % len(datasets)]
        name = f"{ds}_exp{i:02d}"
        classes = json.loads((root / "data/prepared" / ds / "meta.json").read_text())["classes"]
        truth[name] = write_experiment(root, name, labels[ds], classes, wrong_every=3 + i,
                                       epochs=epochs)
        specs[name] = {"dataset": ds, "description": f"fake experiment {i}"}
        if i % 2 == 0:
            specs[name]["reported"] = 70.0 + i
    return {"params": write_params(root, list(datasets), specs), "truth": truth}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--experiments", type=int, default=23)
    args = ap.parse_args()
    make_study(args.out, args.experiments, tuple(SHAPES))
    print(f"wrote a fake study of {args.experiments} experiments to {args.out}")
