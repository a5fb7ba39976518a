"""The configure stage's per-job config files and evaluate's metric arithmetic."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline import configure, evaluate
from pipeline import params as P

ROOT = Path(__file__).resolve().parents[1]


def test_configure_writes_one_file_per_job_and_keeps_unchanged_ones(tmp_path):
    params = P.load(ROOT / "params.yaml")
    inherits = [n for n, e in params["experiments"].items() if "lr" not in e]
    own = [n for n, e in params["experiments"].items() if "lr" in e]
    out = tmp_path / "configs"
    written = configure.configure(params, out)
    assert len(written) == 1 + 2 * len(params["datasets"]) + len(params["experiments"])
    for n in params["experiments"]:
        assert json.loads((out / f"experiments/{n}.json").read_text()) == P.experiment_config(params, n)
    ds = next(iter(params["datasets"]))
    assert json.loads((out / f"datasets/{ds}.source.json").read_text()) == params["datasets"][ds]["source"]
    study = json.loads((out / "study.json").read_text())
    assert list(study["experiments"]) == list(params["experiments"])          # params.yaml's order
    assert configure.configure(params, out) == []                            # nothing rewritten

    # a new global lr: exactly the configs of the experiments that inherit it
    written = configure.configure({**params, "lr": params["lr"] * 2}, out)
    assert sorted(written) == sorted(str(out / f"experiments/{n}.json") for n in inherits)
    assert own and not set(written) & {str(out / f"experiments/{n}.json") for n in own}

    # an experiment removed from the study: its config goes too
    gone = inherits[0]
    fewer = {**params, "experiments": {n: e for n, e in params["experiments"].items() if n != gone}}
    fewer = {**fewer, "experiments": {n: {k: v for k, v in e.items() if k != "pretrained" or v != gone}
                                      for n, e in fewer["experiments"].items()}}
    configure.configure(fewer, out)
    assert not (out / f"experiments/{gone}.json").exists()


def test_a_fine_tuned_experiment_carries_its_parents_config(tmp_path):
    params = P.load(ROOT / "params.yaml")
    child = next(n for n, e in params["experiments"].items() if e.get("pretrained") not in (None, "imagenet"))
    parent = params["experiments"][child]["pretrained"]
    cfg = P.experiment_config(params, child)
    assert cfg["parent"]["config"] == P.experiment_config(params, parent)
    changed = {**params, "experiments": {**params["experiments"],
                                         parent: {**params["experiments"][parent], "seed": 99}}}
    assert P.experiment_config(changed, child) != cfg      # so DVC retrains the child as well


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
