"""Short real training runs on a tiny slice of the digits: loss goes down, runs repeat bit for bit,
early stopping, best-on-val checkpoints, the layer table, and transfer from another experiment."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cpu_reference import digits_prepared
from conftest import files_in, training_defaults
from pipeline import engine, inference, layers, live, train
from pipeline.config import TrainConfig
from pipeline.stage import PipelineError

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = training_defaults()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared data set in the pipeline's format: 400 real 8x8 digit scans (200/100/100)."""
    return digits_prepared(tmp_path_factory.mktemp("prepared"))


def config(**overrides) -> dict:
    """A resolved config as configure writes it (a dict: TrainConfig.from_dict reads it)."""
    c = {**DEFAULTS, "name": "t", "dataset": "digits", "device": "cpu", "epochs": 4, "batch_size": 32,
         "model": {"name": "lenet", "channels": [8], "fc": [32]}}
    c.update(overrides)
    return c


def typed(**overrides) -> TrainConfig:
    return TrainConfig.from_dict(config(**overrides))


def fit(cfg: dict, prepared: Path, out: Path, experiments: Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stats = json.loads((prepared / "stats.json").read_text())
    cfg = TrainConfig.from_dict(cfg)
    parent = engine.parent_checkpoint(cfg, experiments)
    return engine.fit(cfg, prepared, stats, engine.TrainOutputs.in_folder(out), parent)


def test_training_drives_the_loss_down(prepared, tmp_path):
    m = fit(config(epochs=5, threads="auto"), prepared, tmp_path)
    h = live.read_history(tmp_path / "live")
    assert h["train_loss"].iloc[-1] < 0.5 * h["train_loss"].iloc[0]
    assert m["val_acc"] > 0.5
    assert m["threads"] == len(os.sched_getaffinity(0)) == torch.get_num_threads()   # auto: every core


def test_each_epoch_is_logged_through_dvclive(prepared, tmp_path, monkeypatch):
    """live/: the latest epoch's summary (what `dvc exp show` lists) and every epoch so far in the
    plots' files, accuracies in %; written after each epoch, not only at the end. Run in a Git
    repository without .dvc/ (a Snakemake-only checkout): DVCLive must not `dvc init` it."""
    import subprocess
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    seen = []
    log_epochs = live.log_epochs
    monkeypatch.setattr(live, "log_epochs", lambda lv, history: (
        log_epochs(lv, history), seen.append(json.loads((tmp_path / "out" / "live" / "metrics.json").read_text()))))
    m = fit(config(epochs=3, scheduler={"name": "step", "step_size": 1, "gamma": 0.5}), prepared, tmp_path / "out")
    assert [s["step"] for s in seen] == [1, 2, 3] and [s["train"]["lr"] for s in seen] == pytest.approx([0.05, 0.025, 0.0125])
    h = live.read_history(tmp_path / "out" / "live")
    assert list(h.columns) == ["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"]
    assert h["epoch"].tolist() == [1, 2, 3]
    summary = seen[-1]
    assert summary == {"train": {"loss": h["train_loss"].iloc[-1], "acc": h["train_acc"].iloc[-1], "lr": 0.0125},
                       "val": {"loss": h["val_loss"].iloc[-1], "acc": h["val_acc"].iloc[-1]}, "step": 3}
    assert sorted(str(f.relative_to(tmp_path / "out" / "live")) for f in (tmp_path / "out" / "live").rglob("*.json")) \
        == sorted(live.FILES)                                        # what both tools declare, no more
    assert 100 * m["val_acc"] == pytest.approx(h["val_acc"].max()) and 1 < h["val_acc"].max() <= 100   # %
    points = json.loads((tmp_path / "out" / "live" / "plots" / "custom" / "accuracy.json").read_text())
    assert [(p["epoch"], p["split"]) for p in points] == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
    assert [p["accuracy"] for p in points if p["split"] == "val"] == h["val_acc"].tolist()
    assert not (tmp_path / ".dvc").exists()


def test_a_damaged_epoch_log_is_refused_with_its_path(prepared, tmp_path):
    fit(config(epochs=2), prepared, tmp_path)
    lr_file = tmp_path / "live" / "plots" / "custom" / "lr.json"
    lr_file.write_text(lr_file.read_text()[:-20])
    with pytest.raises(ValueError, match="lr.json"):
        live.read_history(tmp_path / "live")
    lr_file.write_text(json.dumps([{"epoch": 1, "split": "train", "lr": 0.05}]))   # one epoch short
    with pytest.raises(ValueError, match="different epochs"):
        live.read_history(tmp_path / "live")


def test_the_thread_count_is_the_configs_whatever_the_environment(prepared, tmp_path):
    torch.set_num_threads(2)
    m = fit(config(epochs=1, threads=1), prepared, tmp_path)
    assert m["threads"] == 1 == json.loads((tmp_path / "run.json").read_text())["threads"] == torch.get_num_threads()


def test_same_params_give_bit_identical_results(prepared, tmp_path):
    cfg = config(model={"name": "ablation", "convs": [8, "M", 16], "fc": [32], "batch_norm": True, "dropout": 0.3},
                 augment=[{"name": "crop", "padding": 1}, {"name": "rotation", "degrees": 10},
                          {"name": "random_resized_crop", "scale": [0.5, 1.0]}], epochs=2)
    fit(cfg, prepared, tmp_path / "a")
    fit(cfg, prepared, tmp_path / "b")
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert files_in(tmp_path / "a" / "live") == files_in(tmp_path / "b" / "live")
    fit({**cfg, "seed": 1}, prepared, tmp_path / "c")
    c = torch.load(tmp_path / "c" / "model.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_best_on_val_checkpoint_and_early_stopping(prepared, tmp_path):
    m = fit(config(lr=1e-9, early_stopping=2, epochs=10), prepared, tmp_path)   # val acc cannot improve
    h = live.read_history(tmp_path / "live")
    assert len(h) == 3 and m["stopped_early"] and m["epochs_run"] == 3
    assert m["epoch"] == int(h["val_acc"].idxmax()) + 1 == 1
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] == 1


def test_last_epoch_checkpoint_without_a_val_split(prepared, tmp_path):
    """The seeds' protocol: train on everything (val_fraction: 0), keep the last epoch."""
    no_val = tmp_path / "prepared"
    no_val.mkdir()
    for f in prepared.iterdir():
        (no_val / f.name).write_bytes(f.read_bytes())
    np.save(no_val / "val_images.npy", np.zeros((0, 8, 8, 1), np.uint8))
    np.save(no_val / "val_labels.npy", np.zeros(0, np.int64))
    m = fit(config(checkpoint="last", epochs=3), no_val, tmp_path / "out")
    h = live.read_history(tmp_path / "out" / "live")
    assert h["val_acc"].isna().all() and h["val_loss"].isna().all() and len(h) == 3
    assert m["epoch"] == 3 and m["val_acc"] is None and m["train_loss"] == h["train_loss"].iloc[-1]
    assert json.loads((tmp_path / "out" / "train.json").read_text())["val_acc"] is None   # valid JSON: null
    assert torch.load(tmp_path / "out" / "model.pt", weights_only=True)["epoch"] == 3
    # with a val split, `last` keeps the last epoch even when an earlier one was better on val
    m = fit(config(checkpoint="last", lr=0.5, epochs=4), prepared, tmp_path / "last")
    last_val_acc = live.read_history(tmp_path / "last" / "live")["val_acc"].iloc[-1]    # in %
    assert m["epoch"] == 4 and 100 * m["val_acc"] == pytest.approx(last_val_acc)


def test_val_loss_is_plain_cross_entropy_whatever_the_training_loss(prepared, tmp_path):
    """Val loss and evaluate's test loss share one definition, so a smoothed or multi-margin run's
    val loss is not its training objective: recomputed here from the kept model."""
    from pipeline import data
    fit(config(label_smoothing=0.3, epochs=1), prepared, tmp_path)
    h = live.read_history(tmp_path / "live")
    model, _, _ = inference.load_model(tmp_path / "model.pt")
    val = data.load_split(prepared, "val", torch.device("cpu"))
    logits = inference.predict(model, val, 32)
    assert h["val_loss"].iloc[0] == pytest.approx(torch.nn.functional.cross_entropy(logits, val.labels).item(), rel=1e-6)
    smoothed = torch.nn.functional.cross_entropy(logits, val.labels, label_smoothing=0.3).item()
    assert abs(h["val_loss"].iloc[0] - smoothed) > 1e-3


def test_test_mode_train_scores_with_batch_statistics_and_keeps_the_eval_mode_figures(prepared, tmp_path):
    """seed 003's code never called model.eval(): `test_mode: train` scores each test batch with
    its own BatchNorm statistics (and dropout on), repeatably, and records the eval-mode figures too."""
    from pipeline import evaluate
    resnet = {"name": "resnet", "stem": 8, "channels": [8, 16], "blocks": [1, 1], "strides": [1, 2], "dropout": 0.2}
    results = {}
    for mode in ("eval", "train", "train"):
        out = tmp_path / f"{mode}{len(results)}"
        fit(config(model=resnet, epochs=1, test_mode=mode), prepared, out)
        results[out.name] = evaluate.evaluate(out / "model.pt", prepared, out / "test.json", out / "p.csv",
                                              out / "pred.csv", out / "c.csv")
    in_eval, in_train, again = results.values()
    assert "test_acc_eval_mode" not in in_eval
    assert in_train["test_acc_eval_mode"] == in_eval["test_acc"]          # the same weights, scored both ways
    assert in_train["test_loss_eval_mode"] == in_eval["test_loss"]
    assert in_train["test_loss"] != in_eval["test_loss"]                  # batch statistics, not running ones
    assert {k: v for k, v in in_train.items()} == {k: v for k, v in again.items()}


def test_last_layer_finetuning_keeps_the_body_in_eval_mode_and_the_head_training(prepared):
    """A frozen body keeps its BatchNorm statistics; dropout in the head still drops."""
    meta, stats = json.loads((prepared / "meta.json").read_text()), json.loads((prepared / "stats.json").read_text())
    cfg = typed(model={"name": "vgg", "layers": [4, "M"], "head": [16], "dropout": 0.5}, finetune="last_layer")
    model = inference.build_model(cfg, meta, stats)
    engine.train_mode(model, cfg)
    modes = {type(m).__name__: m.training for m in model.net.modules() if not list(m.children())}
    assert modes["BatchNorm2d"] is False and modes["Dropout"] is True and modes["Linear"] is True
    engine.train_mode(model, dataclasses.replace(cfg, finetune="all"))
    assert all(m.training for m in model.modules())
    engine.train_mode(model, dataclasses.replace(cfg, frozen_body="train"))     # the course loop's model.train()
    assert all(m.training for m in model.modules())


def test_normalize_none_only_scales_to_unit_range(prepared):
    meta, stats = json.loads((prepared / "meta.json").read_text()), json.loads((prepared / "stats.json").read_text())
    model = inference.build_model(typed(normalize="none"), meta, stats)
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert model.normalize(x).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_normalize_with_a_reports_own_constants(prepared):
    meta, stats = json.loads((prepared / "meta.json").read_text()), json.loads((prepared / "stats.json").read_text())
    model = inference.build_model(typed(normalize={"mean": [0.2], "std": [0.4]}), meta, stats)
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert model.normalize(x).flatten().tolist() == pytest.approx([-0.5, 0.0, 2.0])
    with pytest.raises(PipelineError, match=r"normalize: mean and std need one value per channel \(1 for digits\), "
                                            r"got 3 and 3"):
        inference.build_model(typed(normalize={"mean": [0.5] * 3, "std": [0.2] * 3}), meta, stats)


def test_schedule_lr_is_recorded_per_epoch(prepared, tmp_path):
    fit(config(epochs=3, scheduler={"name": "step", "step_size": 1, "gamma": 0.5}), prepared, tmp_path)
    assert live.read_history(tmp_path / "live")["lr"].tolist() == pytest.approx([0.05, 0.025, 0.0125])


def test_layer_table_is_written_at_the_resized_input(prepared, tmp_path):
    fit(config(epochs=1, input_size=16, model={"name": "basenet", "channels": [4], "fc": []}), prepared, tmp_path)
    table = pd.read_csv(tmp_path / "layers.csv", dtype={"layer": str, "kernel": str, "stride": str})
    assert list(table.columns) == layers.COLUMNS
    assert table.iloc[0].to_dict() == {"layer": "0", "type": "Conv2d", "kernel": "5x5", "stride": "1x1",
                                           "output_shape": "4x12x12", "params": 104, "trainable": 104}
    assert json.loads((tmp_path / "run.json").read_text())["input_size"] == [16, 16]


def test_transfer_from_another_experiment_through_the_cli(prepared, tmp_path):
    exps = tmp_path / "experiments"
    parent_cfg = config(epochs=2)
    child_cfg = config(name="child", epochs=2, pretrained="parent", finetune="last_layer",
                       parent={"config": parent_cfg, "dataset": {}})

    def train_cli(name, cfg):
        d = exps / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg))
        train.main(["--config", str(d / "config.json"), "--prepared", str(prepared),
                    "--stats", str(prepared / "stats.json"), "--model", str(d / "model.pt"),
                    "--live", str(d / "live"), "--metrics", str(d / "train.json"),
                    "--run", str(d / "run.json"), "--layers", str(d / "layers.csv"), "--experiments", str(exps)])
    train_cli("parent", parent_cfg)
    train_cli("child", child_cfg)
    parent, child = (torch.load(exps / n / "model.pt", weights_only=True)["state_dict"] for n in ("parent", "child"))
    assert torch.equal(child["net.0.weight"], parent["net.0.weight"])        # frozen body = parent's body
    assert not torch.equal(child["net.6.weight"], parent["net.6.weight"])    # the head trained
    run = json.loads((exps / "child" / "run.json").read_text())
    assert run["trainable_parameter_count"] == 32 * 10 + 10 < run["parameter_count"]
    # a parent checkpoint trained from another config than the child's record of it is refused
    with pytest.raises(engine.PipelineError, match=r"pretrained: parent: .* another config .* train parent first"):
        train_cli("child", {**child_cfg, "parent": {"config": {**parent_cfg, "lr": 0.5}, "dataset": {}}})
    table = pd.read_csv(exps / "child" / "layers.csv")
    assert table.loc[table["type"] == "Conv2d", "trainable"].tolist() == [0]


def test_missing_parent_checkpoint_is_a_clear_error(prepared, tmp_path):
    cfg = typed(pretrained="nowhere")
    with pytest.raises(engine.PipelineError, match="no checkpoint at .*nowhere.*train experiment nowhere first"):
        engine.parent_checkpoint(cfg, tmp_path)


@pytest.mark.parametrize("every_s, saves", [(0, 3), (3600, 1)])
def test_the_resume_state_is_saved_at_its_cadence_and_always_after_the_last_epoch(prepared, tmp_path, monkeypatch,
                                                                                   every_s, saves):
    from pipeline import resume
    saved = []
    real = resume.save
    monkeypatch.setattr(resume, "save", lambda path, key, state: (saved.append(len(state["history"])),
                                                                    real(path, key, state)))
    fit(config(epochs=3, resume_every_s=every_s), prepared, tmp_path)
    assert len(saved) == saves and saved[-1] == 3
