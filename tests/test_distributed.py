"""One experiment across devices: `devices: 2` through the train stage's CLI relaunches it under
torchrun as 2 gloo processes on the CPU; same outputs as one process, and the same first epoch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, training_defaults
from cpu_reference import digits_prepared
from pipeline import inference, live

DEFAULTS = training_defaults()


def run_train(config: dict, prepared, out, *extra) -> subprocess.CompletedProcess:
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config))
    files = {name: out / f for name, f in (("model", "model.pt"), ("live", "live"),
                                            ("metrics", "train.json"), ("run", "run.json"), ("layers", "layers.csv"))}
    cmd = [sys.executable, "-m", "pipeline.train", "--config", out / "config.json", "--prepared", prepared,
           "--stats", prepared / "stats.json", "--log", out / "train.log",
           *[a for name, path in files.items() for a in (f"--{name}", path)], *extra]
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_two_processes_train_one_experiment_as_one_does(tmp_path):
    prepared = digits_prepared(tmp_path / "prepared")
    config = {**DEFAULTS, "name": "ddp", "dataset": "digits", "device": "cpu", "epochs": 3, "batch_size": 32,
              "model": {"name": "lenet", "channels": [8], "fc": [32]}, "augment": [{"name": "crop", "padding": 1}]}
    p = run_train({**config, "devices": 2}, prepared, tmp_path / "two")
    assert p.returncode == 0, p.stderr[-3000:]
    two = live.read_history(tmp_path / "two" / "live")
    assert len(two) == 3 and two["train_loss"].iloc[-1] < two["train_loss"].iloc[0]   # it learns
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["devices"] == 2 and run["config"]["devices"] == 2
    assert "training on 2 devices" in (tmp_path / "two" / "train.log").read_text()
    # the same global batch, augmentation and shuffling on one process: the same first epoch
    p = run_train({**config, "devices": 1}, prepared, tmp_path / "one")
    assert p.returncode == 0, p.stderr[-3000:]
    one = live.read_history(tmp_path / "one" / "live")
    assert two["train_loss"].iloc[0] == pytest.approx(one["train_loss"].iloc[0], rel=1e-4)
    assert two["val_acc"].iloc[0] == pytest.approx(one["val_acc"].iloc[0], abs=2)   # %
    # the checkpoint is a plain one: evaluate (one process) loads it
    model, _, _ = inference.load_model(tmp_path / "two" / "model.pt")
    ckpt = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    assert ckpt["epoch"] == json.loads((tmp_path / "two" / "train.json").read_text())["epoch"]
    assert model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 10)


def test_two_processes_fine_tune_the_last_layer_with_a_frozen_body_in_eval_mode(tmp_path):
    """finetune: last_layer under DDP: the frozen body is found inside DDP's wrapper (it crashed with
    "'DistributedDataParallel' object has no attribute 'net'"); only the head changes, and the
    checkpoint evaluates."""
    from pipeline import evaluate
    prepared = digits_prepared(tmp_path / "prepared")
    exps = tmp_path / "experiments"
    base = {**DEFAULTS, "dataset": "digits", "device": "cpu", "batch_size": 32,
            "model": {"name": "vgg", "layers": [4, "M"], "head": [16]}}
    p = run_train({**base, "name": "parent", "epochs": 1}, prepared, exps / "parent")
    assert p.returncode == 0, p.stderr[-3000:]
    child = {**base, "name": "child", "epochs": 2, "devices": 2, "pretrained": "parent", "finetune": "last_layer"}
    p = run_train(child, prepared, exps / "child", "--experiments", exps)
    assert p.returncode == 0, p.stderr[-3000:]
    parent, trained = (torch.load(exps / n / "model.pt", weights_only=True)["state_dict"] for n in ("parent", "child"))
    changed = {k for k in trained if k in parent and not torch.equal(parent[k], trained[k])}
    assert changed and all(k.startswith("net.2.") for k in changed), changed   # the head only: BN statistics kept
    out = exps / "child"
    result = evaluate.evaluate(out / "model.pt", prepared, out / "test.json", out / "p.csv", out / "pr.csv", out / "c.csv")
    assert 0 <= result["test_acc"] <= 1


def test_sync_batchnorm_on_cpu_ranks_is_one_error_naming_the_key():
    """torch's SyncBatchNorm has no CPU forward: asking for it on gloo ranks fails before training."""
    from pipeline import distributed
    from pipeline.stage import PipelineError
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(PipelineError, match="sync_batchnorm: true needs CUDA.*set sync_batchnorm: false"):
        distributed.wrap(model, distributed.Ranks(rank=0, world=2), torch.device("cpu"), sync_batchnorm=True)
    assert type(model[1]) is torch.nn.BatchNorm2d                       # left as it was
    one = distributed.wrap(model, distributed.Ranks(), torch.device("cpu"), sync_batchnorm=True)
    assert one is model and type(model[1]) is torch.nn.BatchNorm2d      # one device: nothing to sync
