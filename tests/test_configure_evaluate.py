"""The configure stage's byte-stable output and evaluate's metric arithmetic."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline import configure, evaluate
from pipeline import params as P

ROOT = Path(__file__).resolve().parents[1]


def test_configure_writes_the_resolved_config_and_keeps_an_unchanged_file(tmp_path):
    params = P.load(ROOT / "params.yaml")
    name = next(n for n, e in params["experiments"].items() if "lr" not in e)   # inherits lr
    out = tmp_path / "config.json"
    cfg = configure.configure(params, name, out)
    assert json.loads(out.read_text()) == cfg == P.experiment_config(params, name)
    mtime = out.stat().st_mtime_ns
    configure.configure(params, name, out)
    assert out.stat().st_mtime_ns == mtime                    # untouched: no false rerun downstream
    params = {**params, "lr": params["lr"] * 2}
    configure.configure(params, name, out)
    assert json.loads(out.read_text())["lr"] == cfg["lr"] * 2
    assert out.stat().st_mtime_ns != mtime


def test_scores_match_hand_computed_metrics():
    classes = ["a", "b", "c"]
    logits = np.array([[2.0, 1.0, 0.0],    # pred a, true a
                       [0.0, 3.0, 1.0],    # pred b, true c
                       [0.0, 0.0, 5.0],    # pred c, true c
                       [1.0, 0.5, 0.0]])   # pred a, true b
    labels = np.array([0, 2, 2, 1])
    s = evaluate.scores(logits, labels, classes)
    assert s["test_acc"] == 0.5
    assert s["per_class_acc"] == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert s["confusion"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert s["pred"].tolist() == [0, 1, 2, 0]
    expected_loss = np.mean([-(l[t] - math.log(np.exp(l).sum())) for l, t in zip(logits, labels)])
    assert math.isclose(s["test_loss"], expected_loss, rel_tol=1e-9)
    assert s["test_top5"] == 1.0                              # k = min(5, 3 classes): always right
