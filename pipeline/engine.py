"""The torch side of train and evaluate: device choice, seeding, the loops, checkpoints."""
from __future__ import annotations

import json
import logging
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import data, models

log = logging.getLogger("pipeline.engine")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name} asked for but CUDA is not available; set device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; make CPU kernels deterministic. Returns the shuffling RNG."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def versions() -> dict:
    import torchvision
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform(),
            "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def build_model(config: dict, meta: dict, stats: dict) -> nn.Module:
    """Normalisation (from the training split's stats) followed by the registered model."""
    net = models.build(config["model"], meta["channels"], meta["image_size"], len(meta["classes"]))
    return nn.Sequential(data.Normalize(stats["mean"], stats["std"]), net)


def make_optimizer(config: dict, params) -> torch.optim.Optimizer:
    lr, wd, momentum = config["lr"], config["weight_decay"], config["momentum"]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    if config["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=wd)


@torch.no_grad()
def predict(model: nn.Module, split: data.Split, batch_size: int) -> torch.Tensor:
    """Logits for the whole split, in order: (N, num_classes) float32 on the CPU."""
    model.eval()
    return torch.cat([model(x).float().cpu() for x, _ in data.batches(split, batch_size)])


def run_epoch(model, split, loss_fn, optimizer, batch_size, generator, desc) -> tuple[float, float]:
    """One pass of training. Returns (mean loss, accuracy) over the epoch's samples."""
    model.train()
    total_loss, correct = 0.0, 0
    for x, y in tqdm(data.batches(split, batch_size, generator), desc=desc, leave=False,
                     total=-(-len(split) // batch_size)):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(split), correct / len(split)


def fit(config: dict, prepared: Path, stats: dict, model_out: Path, history_out: Path,
        metrics_out: Path) -> dict:
    """Train one experiment, keeping the best-val checkpoint; write history and metrics."""
    from pipeline.stage import atomic_path
    generator = seed_everything(config["seed"])
    device = pick_device(config["device"])
    meta = data.load_meta(prepared)
    train, val = (data.load_split(prepared, s, device) for s in ("train", "val"))
    model = build_model(config, meta, stats).to(device)
    optimizer = make_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    history, best, start = [], None, time.perf_counter()
    for epoch in range(1, config["epochs"] + 1):
        train_loss, train_acc = run_epoch(model, train, loss_fn, optimizer, config["batch_size"],
                                          generator, f"{config['name']} epoch {epoch}")
        logits = predict(model, val, config["batch_size"])
        val_loss = loss_fn(logits, val.labels.cpu()).item()
        val_acc = (logits.argmax(1) == val.labels.cpu()).float().mean().item()
        history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"]})
        log.info("epoch %d/%d train loss %.4f acc %.4f | val loss %.4f acc %.4f", epoch,
                 config["epochs"], train_loss, train_acc, val_loss, val_acc)
        if best is None or val_acc > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss}
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    metrics = {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "best_val_loss": best["val_loss"],
               "epochs_run": len(history), "train_time_s": round(time.perf_counter() - start, 3),
               "params": sum(p.numel() for p in model.parameters()), "device": str(device),
               "config": config, "versions": versions()}
    with atomic_path(model_out) as tmp:
        torch.save({"state_dict": best_state, "config": config, "meta": meta, "stats": stats,
                    "epoch": best["epoch"]}, tmp)
    with atomic_path(history_out) as tmp:
        tmp.write_text(_csv(history))
    with atomic_path(metrics_out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    return metrics


def _csv(rows: list[dict]) -> str:
    keys = list(rows[0])
    return "\n".join([",".join(keys)] + [",".join(repr(r[k]) for k in keys) for r in rows]) + "\n"


def load_model(checkpoint: Path) -> tuple[nn.Module, dict, torch.device]:
    """The checkpoint's model on the device its config asks for, with the checkpoint dict."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    device = pick_device(ckpt["config"]["device"])
    model = build_model(ckpt["config"], ckpt["meta"], ckpt["stats"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device), ckpt, device
