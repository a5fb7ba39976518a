"""The training side of the train stage: seeding, transfer from a parent, the loops, checkpoints.

The model and how it runs (device, threads, precision) live in inference.py, recipes (optimizer,
schedule, loss, early stopping) in recipes.py, augmentation in augment.py, layer tables in
layers.py; this module wires them into one seeded training run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import augment, data, distributed, inference, layers, live, models, recipes, resume
from pipeline.config import TrainConfig
from pipeline.stage import PipelineError, file_sha256, on_signal

log = logging.getLogger("pipeline.engine")


def seed_everything(seed: int, device: torch.device, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch. Returns the shuffling RNG.

    CPU runs are repeatable bit for bit as they are. On CUDA, `deterministic` makes them so too:
    cuBLAS gets a fixed workspace, a kernel without a deterministic version is an error (not a
    warning), and cuDNN stops auto-tuning; otherwise cuDNN picks the fastest kernels (benchmark).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # read at cuBLAS's first use
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
    else:
        torch.use_deterministic_algorithms(True, warn_only=not deterministic)
    return torch.Generator().manual_seed(seed)


def versions() -> dict:
    from importlib.metadata import version  # not `import torchvision`: that costs ~2 s per stage
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": version("torchvision"), "numpy": np.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),   # AVX2/AVX512 kernels differ in the last bits
            "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def parent_checkpoint(config: TrainConfig, experiments: Path | None) -> Path | None:
    """The checkpoint `pretrained:` names, when it names another experiment (a train input)."""
    name = config.pretrained
    if not name or name == "imagenet":
        return None
    if experiments is None:
        raise PipelineError(f"pretrained: {name}: pass --experiments (the results/experiments folder)")
    path = experiments / name / "model.pt"
    if not path.exists():
        raise PipelineError(f"pretrained: {name}: no checkpoint at {path}; train experiment {name} "
                                  f"first (snakemake does this itself; with DVC: dvc repro train@{name})")
    return path


def init_pretrained(model: nn.Module, config: TrainConfig, path: Path | None) -> None:
    """Load the parent experiment's weights (its checkpoint at `path`: parent_checkpoint) into
    everything but the head; freeze for `finetune: last_layer`. ImageNet weights are loaded by the
    builder (see build_model's `weights`)."""
    head = models.head_name(model.net)
    if path is not None:
        parent = config.pretrained
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if config.parent is not None and ckpt["config"] != config.parent["config"]:
            raise PipelineError(
                f"pretrained: {parent}: {path} was trained with another config than params.yaml now gives "
                f"{parent}; train {parent} first (dvc repro train@{parent}, or snakemake, which does it itself)")
        theirs = ckpt["state_dict"]
        own = model.net.state_dict()
        body = [k for k in own if not k.startswith(head + ".")]
        for k in body:
            if f"net.{k}" not in theirs or theirs[f"net.{k}"].shape != own[k].shape:
                raise PipelineError(
                    f"pretrained: {parent}: its model does not match this experiment's model at layer {k!r}; "
                    f"fine-tuning needs the same model and input channels, with only the classes free to differ")
            own[k] = theirs[f"net.{k}"]
        model.net.load_state_dict(own)
        log.info("initialised %d tensors from %s; new head %s", len(body), path, head)
    if config.finetune == "last_layer":
        for name, p in model.net.named_parameters():
            p.requires_grad_(name.startswith(head + "."))
    return path


def train_mode(model: nn.Module, config: TrainConfig) -> None:
    """Training mode, except that under `finetune: last_layer` the frozen body is in eval mode (a
    fixed feature extractor keeps its BatchNorm statistics; `frozen_body: train` lets them follow
    the batches instead) while the part holding the head, with any dropout in it, trains. The body:
    every top-level part of the network but the head's."""
    model.train()
    if config.finetune == "last_layer" and config.frozen_body == "eval":
        net = unwrapped(model).net
        head_part = models.head_name(net).split(".")[0]
        for name, part in net.named_children():
            if name != head_part:
                part.eval()


def unwrapped(model: nn.Module) -> nn.Module:
    """The pipeline's own module inside DDP's wrapper (`.module`) and torch.compile's (`._orig_mod`)."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


class Diverged(Exception):
    """The training loss became non-finite, or exploded (see run_epoch)."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"step {step}: loss {loss:.4g}")
        self.step, self.loss = step, loss


EXPLODED = 1000.0      # a loss this many times the run's first (and above this value) has diverged
CHECK_EVERY = 50       # steps between the only host reads of an epoch, to stop a diverged run early


@dataclass(frozen=True)
class Step:
    """What a training step runs, fixed for the whole run: the model it steps (DDP's wrapper,
    torch.compile's, or the model itself), its loss and optimizer, and how it runs (autocast,
    channels_last, this process's rank)."""
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    precision: contextlib.AbstractContextManager = contextlib.nullcontext()
    nhwc: bool = False
    ranks: distributed.Ranks = distributed.Ranks()


def run_epoch(step: Step, split: data.Split, config: TrainConfig, generators: dict[str, torch.Generator],
              desc: str = "train", loss_limit: float | None = None) -> tuple[float, float]:
    """One pass of training with per-sample augmentation. Returns (mean loss, accuracy).
    `generators`: "shuffle" draws the batches' order, "augment" the augmentation.

    A step whose loss is not finite or above `loss_limit` has diverged. The limit is the run's:
    fit passes EXPLODED times the first epoch's mean loss (at least 1), so that an explosion spread
    over epochs (one batch each) is caught too; None, in the first epoch, takes it from its first step.

    Under DDP (`step.ranks`) this rank augments and trains on its slice of each global batch, with the
    augmentation draws the image gets on one device; the epoch's sums (and the divergence check)
    are reduced over the ranks.

    Nothing in the step waits for the device: loss and correct counts add up on it (the loss in
    float64, as exactly as Python floats did), and so does the first step whose loss is not
    finite or exploded. They are read after the last step, and that step is checked every
    CHECK_EVERY steps too; a diverged epoch raises Diverged.
    """
    batch_size, clip = config.batch_size, config.grad_clip
    # compile: reduce-overhead replays CUDA graphs, recorded per shape: every batch full
    static = config.compile == "reduce-overhead" and len(split) >= batch_size
    seen = len(split) - len(split) % batch_size if static else len(split)
    model, optimizer, ranks = step.model, step.optimizer, step.ranks
    train_mode(model, config)
    device = split.labels.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    bad_step = torch.full((), -1.0, dtype=torch.float64, device=device)   # first diverged step; -1: none
    bad_loss = torch.zeros((), dtype=torch.float64, device=device)
    limit = loss_limit
    batches = data.batches(split, batch_size, generators["shuffle"], drop_last=static)
    for i, (x, y) in enumerate(tqdm(batches, desc=desc, leave=False, total=-(-seen // batch_size), disable=not ranks.main)):
        n, part = len(y), distributed.part(len(y), ranks)    # this rank's slice of the global batch
        x = augment.apply(config.augment, x[part], generators["augment"], config.input_size, n, part)
        x, y = data.memory_format(x, step.nhwc), y[part]
        optimizer.zero_grad(set_to_none=True)
        with step.precision:
            logits = model(x)
            loss = step.loss_fn(logits, y) if len(y) else logits.sum() * 0   # (an empty slice: no images)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        optimizer.step()
        value = loss.detach().double()
        total_loss += value * len(y)
        correct += (logits.argmax(1) == y).sum()
        if limit is None:
            limit = EXPLODED * value.abs().clamp(min=1.0)
        new = (bad_step < 0) & ~((value.abs() <= limit) & torch.isfinite(value))
        bad_step = torch.where(new, float(i), bad_step)
        bad_loss = torch.where(new, value, bad_loss)
        if (i + 1) % CHECK_EVERY == 0 and distributed.all_reduce(bad_step.clone(), ranks, "max").item() >= 0:
            break
    sums = distributed.all_reduce(torch.stack([total_loss, correct.double()]), ranks)
    total, right, first_bad, first_bad_loss = torch.cat(
        [sums, torch.stack([bad_step, bad_loss])]).tolist()               # the epoch's one read
    if first_bad >= 0:
        raise Diverged(int(first_bad) + 1, first_bad_loss)
    return total / seen, right / seen


def _loss_limit(history: list[dict]) -> float | None:
    """The run's divergence limit once its first epoch is done (the same after a resume: it is
    read from the history the resume state keeps); None before, for run_epoch to set."""
    return EXPLODED * max(1.0, abs(history[0]["train_loss"])) if history else None


@dataclass(frozen=True)
class TrainOutputs:
    """The files the train stage writes (the layer table is optional)."""
    model: Path
    live: Path            # the per-epoch log (pipeline/live.py), a folder
    metrics: Path
    run: Path
    layers: Path | None = None

    @classmethod
    def in_folder(cls, folder: Path, layers: bool = True) -> TrainOutputs:
        return cls(folder / "model.pt", folder / "live", folder / "train.json", folder / "run.json",
                   folder / "layers.csv" if layers else None)


def fit(config: TrainConfig, prepared: Path, stats: dict, out: TrainOutputs, parent: Path | None = None) -> dict:
    """Train one experiment, keeping the best-val (or last) checkpoint; log each epoch (pipeline/live.py);
    write metrics, run record (resolved config, library versions, sizes) and layer table. Returns
    metrics + run record. A run that fails leaves no log behind (its resume state stays)."""
    ranks = distributed.current()
    remove_log = (lambda: live.remove(out.live)) if ranks.main else (lambda: None)
    try:
        with on_signal(remove_log):           # SIGTERM / SIGINT: the stage's handler calls it
            if ranks.world == 1:
                return _fit(config, prepared, stats, out, parent, ranks, inference.pick_device(config.device))
            return _fit_distributed(config, prepared, stats, out, parent, ranks)
    except BaseException:
        remove_log()
        raise


def _fit_distributed(config: TrainConfig, prepared: Path, stats: dict, out: TrainOutputs, parent: Path | None,
                     ranks: distributed.Ranks) -> dict:
    cuda = torch.cuda.is_available() and config.device != "cpu"
    device = torch.device("cuda", ranks.local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    distributed.start(ranks, device)
    try:
        return _fit(config, prepared, stats, out, parent, ranks, device)
    finally:
        distributed.stop(ranks)


def _fit(config: TrainConfig, prepared: Path, stats: dict, out: TrainOutputs, parent: Path | None,
         ranks: distributed.Ranks, device: torch.device) -> dict:
    generators = {"shuffle": seed_everything(config.seed, device, config.deterministic),
                  "augment": torch.Generator().manual_seed(config.seed + 1)}   # independent of the shuffling
    threads = inference.set_threads(config, ranks.world)
    meta = data.load_meta(prepared)
    model, nhwc, precision = _model_on(device, config, meta, stats, parent)
    train, val = (data.load_split(prepared, s, device, channels_last=nhwc) for s in ("train", "val"))
    optimizer, schedule, stopper, loss_fn = _recipe(config, model)
    # torch.compile traces on the first call, so the first epoch's time holds the compile time.
    step_model = distributed.wrap(model, ranks, device, config.sync_batchnorm)
    step_model, eval_model = compiled(step_model, model, config, ranks)
    step = Step(step_model, loss_fn, optimizer, precision, nhwc, ranks)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule, "stopper": stopper}
    data_sha256 = resume.data_digest(stats, prepared)
    state_file, key = resume.state_path(out.model), resume.run_key(config, data_sha256)
    run = resume.restore(state_file, key, parts, generators)
    if run.history:
        log.info("resuming %s after epoch %d (from %s)", config.name, len(run.history), state_file)
    epochs_log = live.open_log(out.live) if ranks.main else None
    if epochs_log is not None and run.history:
        live.log_epochs(epochs_log, run.history)
    start = saved_at = time.perf_counter() - run.elapsed
    for epoch in range(len(run.history) + 1, config.epochs + 1):
        if run.stopped:
            break
        lr, epoch_start = schedule.lr, time.perf_counter()
        train_loss, train_acc = _train_epoch(step, train, config, generators, epoch, lr, run.history)
        # each rank scores its slice of val, on the plain module: DDP's forward would sync buffers
        val_loss, val_acc = score_val_split(eval_model, val, config.eval_batch_size, precision, nhwc, ranks)
        _record(run, model, config, {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                     "val_loss": val_loss, "val_acc": val_acc, "lr": lr}, epochs_log)
        run.epoch_times.append(round(time.perf_counter() - epoch_start, 3))
        schedule.step(val_acc)            # val_acc is None only where neither needs it (params checks)
        run.stopped = stopper.update(val_acc) if stopper.patience else False
        if run.stopped:
            log.info("early stopping: no better val accuracy for %d epochs", stopper.patience)
        # The resume state (~3x the model: weights, optimizer, kept weights): after an epoch once
        # resume_every_s have passed since the last save (0: every epoch), and after the last epoch.
        # A run killed in between resumes from the last one saved, with the same final bytes.
        if ranks.main and (time.perf_counter() - saved_at >= config.resume_every_s or run.stopped
                           or epoch == config.epochs):
            saved_at, run.elapsed = time.perf_counter(), time.perf_counter() - start
            resume.snapshot(state_file, key, parts, generators, run)
    # what the run started from, beside its config: the data's digest, and a parent's checkpoint's
    # (Snakemake's run after a DVC restore takes a child as current only where they match)
    digests = {"data_sha256": data_sha256, "parent_sha256": file_sha256(parent) if parent else None}
    metrics, record = _results(config, run, model, meta, device, ranks, threads, time.perf_counter() - start,
                               digests)
    if ranks.main:   # rank 0 writes the outputs
        _write(out, model, config, meta, stats, run, metrics, record)
        resume.remove(state_file)
    return {**metrics, **record}


def _recipe(config: TrainConfig, model) -> tuple:
    """The optimizer (over the trainable parameters), lr schedule, early stopping and loss."""
    if config.optimizer == "sgd" and config.nesterov and not config.momentum:
        raise PipelineError(f"experiment {config.name}: nesterov: true needs momentum > 0")
    optimizer = recipes.make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    return (optimizer, recipes.Schedule(config.scheduler, optimizer, config.epochs),
            recipes.EarlyStopping(config.early_stopping), recipes.make_loss(config))


def _train_epoch(step: Step, train: data.Split, config: TrainConfig, generators: dict, epoch: int, lr: float,
                 history: list[dict]) -> tuple[float, float]:
    """run_epoch, its failures as one line each: a divergence (with an lr to try), out of memory."""
    try:
        return run_epoch(step, train, config, generators, f"{config.name} epoch {epoch}", _loss_limit(history))
    except Diverged as e:
        lower = lr / 10 if lr <= 1 else 0.1      # an lr far above any recipe's: a usual value
        raise PipelineError(
            f"experiment {config.name} diverged in epoch {epoch}, {e} (lr {lr:g}): nothing written; "
            f"lower lr (e.g. lr: {lower:g}) or clip gradients (e.g. grad_clip: 1.0)") from None
    except torch.cuda.OutOfMemoryError:
        raise PipelineError(out_of_memory(config, train.labels.device)) from None


def _record(run: resume.Progress, model, config: TrainConfig, row: dict, epochs_log) -> None:
    """An epoch's row: into the history, the epoch log (rank 0) and the stage log; and the kept
    checkpoint: the best on val (never on test), or the last epoch's (the seeds' way)."""
    run.history.append(row)
    if epochs_log is not None:
        live.log_epochs(epochs_log, run.history)
    log.info("epoch %d/%d lr %.3g train loss %.4f acc %.4f | val loss %s acc %s", row["epoch"], config.epochs,
             row["lr"], row["train_loss"], row["train_acc"], _fmt(row["val_loss"]), _fmt(row["val_acc"]))
    if config.checkpoint == "last" or run.kept is None or row["val_acc"] > run.kept["val_acc"]:
        run.kept = row
        run.kept_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _results(config: TrainConfig, run: resume.Progress, model, meta: dict, device: torch.device, ranks: distributed.Ranks,
             threads: int, train_time_s: float, digests: dict) -> tuple[dict, dict]:
    """train.json: the few scalars of the kept checkpoint's epoch (val figures null without a val
    split); run.json: what the run was, for the report."""
    kept = run.kept
    metrics = {"epoch": kept["epoch"], "val_acc": kept["val_acc"], "train_loss": kept["train_loss"],
               "epochs_run": len(run.history), "train_time_s": round(train_time_s, 3)}
    record = {"val_loss": kept["val_loss"], "train_acc": kept["train_acc"],
              "stopped_early": len(run.history) < config.epochs,
              "parameter_count": sum(p.numel() for p in model.parameters()),
              "trainable_parameter_count": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "input_size": list(inference.input_size(config, meta)), "device": str(device), "devices": ranks.world,
              "threads": threads, "epoch_times_s": run.epoch_times,
              "config": config.to_dict(), "config_sha256": config.sha256, **digests, "versions": versions()}
    return metrics, record


def _model_on(device: torch.device, config: TrainConfig, meta: dict, stats: dict, parent: Path | None):
    """The experiment's model with its starting weights (ImageNet's, a parent's, or its seed's), on
    `device`; whether it runs channels_last; its autocast context."""
    weights = {"weights": "imagenet"} if config.pretrained == "imagenet" else {}
    model = inference.build_model(config, meta, stats, **weights)
    if config.init == "he":
        he_init(model.net)
    init_pretrained(model, config, parent)
    model = model.to(device)
    nhwc, precision = inference.channels_last(model, device), inference.autocast(config, device)
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    return model, nhwc, precision


def compiled(step_model: nn.Module, model: nn.Module, config: TrainConfig, ranks: distributed.Ranks):
    """(the training step's model, the val scoring's model) as `compile` says. true: torch.compile of
    the step model, which val scoring shares on one process. reduce-overhead: CUDA graphs (kernel
    launches replayed, not issued one by one: the seed study's small models are launch-bound), shapes
    static (run_epoch keeps every training batch full), and val scored by a compile of its own, so
    that the eval-mode graphs are recorded apart from training's. Under DDP val is scored on the
    plain module: DDP's forward would sync buffers."""
    mode = config.compile
    if not mode:
        return step_model, model if ranks.world > 1 else step_model
    if mode == "reduce-overhead":
        return (torch.compile(step_model, mode="reduce-overhead", dynamic=False),
                torch.compile(model, mode="reduce-overhead", dynamic=False))
    step_model = torch.compile(step_model)
    return step_model, model if ranks.world > 1 else step_model


def he_init(net: nn.Module) -> None:
    """He et al. (2015): every conv and linear weight N(0, 2 / fan_in), the ReLU gain; biases zero."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _write(out: TrainOutputs, model, config: TrainConfig, meta: dict, stats: dict, progress: resume.Progress,
           metrics: dict, run: dict) -> None:
    """The stage's outputs, each all or nothing: the kept checkpoint, layer table, run record, metrics."""
    from pipeline.stage import atomic_path
    table = layers.layer_table(model.net.cpu(), meta["channels"], tuple(run["input_size"])) if out.layers else None
    checkpoint = {"state_dict": progress.kept_state, "config": config.to_dict(), "meta": meta, "stats": stats,
                  "epoch": progress.kept["epoch"]}
    with atomic_path(out.model) as tmp:
        resume.torch_save(checkpoint, tmp)
    if out.layers:
        with atomic_path(out.layers) as tmp:
            table.to_csv(tmp, index=False)
    with atomic_path(out.run) as tmp:
        tmp.write_text(json.dumps(run, indent=1, allow_nan=False))
    with atomic_path(out.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))


def score_val_split(model, val: data.Split, batch_size: int, precision, nhwc: bool,
                    ranks: distributed.Ranks = distributed.Ranks()) -> tuple[float | None, float | None]:
    """(loss, accuracy) on the val split, or (None, None) without one (val_fraction: 0). The loss is
    plain cross-entropy whatever the training loss, the definition evaluate's test loss has too.
    Under DDP each rank scores its slice and the sums are reduced: every rank gets the figures."""
    if not len(val):
        return None, None
    images, labels = distributed.shard(val.images, val.labels, ranks)
    logits = inference.predict(model, data.Split(images, labels), batch_size, precision, nhwc)
    labels = labels.cpu()
    sums = torch.stack([nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                        (logits.argmax(1) == labels).sum().double()]) if len(labels) else torch.zeros(2, dtype=torch.float64)
    if ranks.world > 1:   # gloo reduces CPU tensors; NCCL needs them on the device
        sums = distributed.all_reduce(sums.to(val.labels.device), ranks).cpu()
    loss_sum, right = sums.tolist()
    return loss_sum / len(val), right / len(val)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def out_of_memory(config: TrainConfig, device: torch.device) -> str:
    total = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    bs = config.batch_size
    return (f"experiment {config.name}: {device} ran out of memory at batch_size {bs} ({name}, "
            f"{total:.0f} GiB): nothing written; try batch_size: {max(1, bs // 2)}")


