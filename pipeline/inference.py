"""A model from its config, and running it: device, CPU threads, precision, memory format, the
model itself (normalisation, resize, the registered network), prediction, and loading a saved
checkpoint. What evaluate needs; the training loop (engine.py) builds on it.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from pipeline import augment, data, gpus, models
from pipeline.config import TrainConfig
from pipeline.stage import PipelineError


def pick_device(name: str) -> torch.device:
    """`auto`: the CPU without CUDA; with several GPUs, one no other job of this machine holds
    (pipeline/gpus.py), so that K jobs at once train on K GPUs, not all on cuda:0."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if count == 1:
            return torch.device("cuda")
        device = torch.device("cuda", gpus.claim(count))
        torch.cuda.set_device(device)
        return device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PipelineError(f"device: {name}: no CUDA GPU is visible to this process (torch "
                                f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); set device: auto "
                                f"(a GPU where there is one, else the CPU) or device: cpu to run here")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PipelineError(f"device: {name}: this process sees {torch.cuda.device_count()} GPU(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; set device: auto or one of those")
        return device
    return torch.device(name)


def set_threads(config: TrainConfig, ranks: int = 1) -> int:
    """Give torch's CPU kernels the config's thread count and return it. `auto`: the cores this
    process may use (its CPU affinity: SLURM's allocation, taskset), split among `ranks` DDP
    processes. A float sum's order depends on the count, so it is part of the result: set here
    from the config, never inherited (Snakemake runs a job under OMP_NUM_THREADS=1, DVC under
    the machine's default), it is the same under either tool, and run.json records it."""
    threads = config.threads
    if threads == "auto":
        threads = max(1, len(os.sched_getaffinity(0)) // ranks)
    torch.set_num_threads(threads)
    return threads


def autocast(config: TrainConfig, device: torch.device):
    """The forward pass's precision: `precision: auto` is bf16 autocast on CUDA and fp32 on the
    CPU (where fp32 is the bit-for-bit reproducible baseline); `fp32` and `bf16` say it outright."""
    precision = config.precision
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def channels_last(model: nn.Module, device: torch.device) -> bool:
    """NHWC for convolutional models on CUDA (what tensor-core convolutions want)."""
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def input_size(config: TrainConfig, meta: dict) -> tuple[int, int]:
    """The size the model sees: `input_size` when the recipe resizes, else the data set's own."""
    s = config.input_size
    return (s, s) if s else tuple(meta["image_size"])


def normalisation(config: TrainConfig, meta: dict, stats: dict) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std): the training split's, ImageNet's (what pretrained weights expect), 0.5,
    none (0, 1: pixels scaled to [0, 1] only), or the constants the config gives."""
    how, c = config.normalize, meta["channels"]
    if isinstance(how, dict):
        if not len(how["mean"]) == len(how["std"]) == c:
            raise PipelineError(f"experiment {config.name}: normalize: mean and std need one value per channel "
                                f"({c} for {config.dataset}), got {len(how['mean'])} and {len(how['std'])}")
        return list(how["mean"]), list(how["std"])
    if how == "imagenet":
        if c != 3:
            raise PipelineError(f"normalize: imagenet needs 3-channel images, {config.dataset} has {c}; "
                                f"use normalize: dataset")
        return IMAGENET_MEAN, IMAGENET_STD
    if how == "half":
        return [0.5] * c, [0.5] * c
    if how == "none":
        return [0.0] * c, [1.0] * c
    return stats["mean"], stats["std"]


def build_model(config: TrainConfig, meta: dict, stats: dict, **extra) -> nn.Module:
    """uint8 (B, C, H, W) -> normalise -> resize to the input size (the short side to
    `resize_before_crop` first, where set, then the centre square) -> the registered model -> logits."""
    size = input_size(config, meta)
    try:
        net = models.build(config.model, meta["channels"], size, len(meta["classes"]), **extra)
    except ValueError as e:
        raise PipelineError(f"experiment {config.name}: model: {e}; set input_size (e.g. input_size: 32) "
                            f"to resize the images, or use fewer pooling layers") from None
    mean, std = normalisation(config, meta, stats)
    resize = augment.Resize(size[0], config.resize_before_crop) if config.input_size else nn.Identity()
    return nn.Sequential(OrderedDict(normalize=data.Normalize(mean, std), resize=resize, net=net))


@torch.no_grad()
def predict(model: nn.Module, split: data.Split, batch_size: int,
            precision=contextlib.nullcontext(), nhwc: bool = False, train_mode: bool = False) -> torch.Tensor:
    """Logits for the whole split, in order: (N, num_classes) float32 on the CPU (one copy at the end).
    `train_mode`: scored as code that never calls model.eval() scores (BatchNorm normalises each
    batch by its own statistics and updates its running ones; dropout is on)."""
    model.train(train_mode)
    with precision:
        out = [model(data.memory_format(x, nhwc)).float() for x, _ in data.batches(split, batch_size)]
    return torch.cat(out).cpu()


def load_model(checkpoint: Path) -> tuple[nn.Module, TrainConfig, torch.device]:
    """The checkpoint's model, on the device its config asks for, and that config."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict(ckpt["config"], source=f"{checkpoint} (its config)")
    set_threads(config)
    device = pick_device(config.device)
    model = build_model(config, ckpt["meta"], ckpt["stats"])
    model.load_state_dict(ckpt["state_dict"])
    model = model.to(device)
    if channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model, config, device
