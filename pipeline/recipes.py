"""Training recipes chosen by params: optimizer, learning-rate schedule, loss, early stopping.

Schedules step once per epoch (after validation), so the logged lr (live/plots/custom/lr.json) is the rate each
epoch trained with, the unit the seeds report their schedules in:

    scheduler: {name: none}
    scheduler: {name: step, step_size: 10, gamma: 0.1}
    scheduler: {name: multistep, milestones: [5, 7, 11], gamma: 0.5}
    scheduler: {name: piecewise, epochs: [1, 6, 8, 12], lrs: [0.005, 0.003, 0.001, 0.0002]}
    scheduler: {name: plateau, factor: 0.1, patience: 3}        # on val accuracy (mode max)
    scheduler: {name: exponential, gamma: 0.9}
    scheduler: {name: cosine, warmup_epochs: 2}                 # linear warm-up, cosine to 0
"""
from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from pipeline.config import TrainConfig


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    lr, wd, momentum = config.lr, config.weight_decay, config.momentum
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=wd)


LR = torch.optim.lr_scheduler


def _piecewise(optimizer, opts: dict, epochs: int):
    """lrs[i] from epoch epochs[i] (1-based) on: seed 000's birds recipe."""
    starts, lrs, base = opts["epochs"], opts["lrs"], optimizer.param_groups[0]["lr"]
    return LR.LambdaLR(optimizer, lambda e: lrs[max(0, bisect.bisect_right(starts, e + 1) - 1)] / base)


def _cosine(optimizer, opts: dict, epochs: int):
    """Epoch e (0-based): linear warm-up over w epochs, then cosine to 0."""
    w = opts.get("warmup_epochs", 0)
    return LR.LambdaLR(optimizer, lambda e: (e + 1) / (w + 1) if e < w else
                       0.5 * (1 + math.cos(math.pi * (e - w) / max(1, epochs - w))))


# scheduler name -> (optimizer, its options, epochs) -> a torch scheduler (None: a constant lr)
SCHEDULES = {
    "none": lambda optimizer, opts, epochs: None,
    "step": lambda optimizer, opts, epochs: LR.StepLR(optimizer, step_size=opts["step_size"],
                                                      gamma=opts.get("gamma", 0.1)),
    "multistep": lambda optimizer, opts, epochs: LR.MultiStepLR(optimizer, milestones=opts["milestones"],
                                                                gamma=opts.get("gamma", 0.1)),
    "piecewise": _piecewise,
    "plateau": lambda optimizer, opts, epochs: LR.ReduceLROnPlateau(   # steps on val accuracy
        optimizer, mode="max", factor=opts.get("factor", 0.1), patience=opts.get("patience", 3)),
    "exponential": lambda optimizer, opts, epochs: LR.ExponentialLR(optimizer, gamma=opts["gamma"]),
    "cosine": _cosine,
}


class Schedule:
    """A per-epoch learning-rate schedule: `step(val_acc)` after each epoch's validation."""

    def __init__(self, spec: dict, optimizer: torch.optim.Optimizer, epochs: int):
        self.name, self.optimizer = spec["name"], optimizer
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown scheduler {self.name!r}")
        self.sched = SCHEDULES[self.name](optimizer, {k: v for k, v in spec.items() if k != "name"}, epochs)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, val_acc: float) -> None:
        if isinstance(self.sched, LR.ReduceLROnPlateau):
            self.sched.step(val_acc)
        elif self.sched is not None:
            self.sched.step()

    def state_dict(self) -> dict:
        return self.sched.state_dict() if self.sched is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.sched is not None:
            self.sched.load_state_dict(state)


def make_loss(config: TrainConfig) -> nn.Module:
    if config.loss == "multi_margin":
        return nn.MultiMarginLoss()
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


class EarlyStopping:
    """Stop after `patience` epochs without a new best val accuracy (patience 0 = never stop)."""

    def __init__(self, patience: int):
        self.patience, self.best, self.since_best = patience, -math.inf, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since_best = state["best"], state["since_best"]

    def update(self, val_acc: float) -> bool:
        """Record an epoch's val accuracy; True when training should stop."""
        if val_acc > self.best:
            self.best, self.since_best = val_acc, 0
        else:
            self.since_best += 1
        return self.patience > 0 and self.since_best >= self.patience
