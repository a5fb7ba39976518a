"""Prepared data as tensors: load a split, normalise, and iterate in seeded batches.

Prepared data sets are small enough (CIFAR: 150 MB of uint8) to hold as one uint8 tensor on the
training device; batches are sliced, converted to float and normalised there, with no
DataLoader workers. Larger sets will stream through the same interface.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Split:
    images: torch.Tensor   # (N, C, H, W) uint8, on the training device
    labels: torch.Tensor   # (N,) int64, same device

    def __len__(self) -> int:
        return len(self.labels)


def load_meta(prepared: Path) -> dict:
    return json.loads((Path(prepared) / "meta.json").read_text())


def load_split(prepared: Path, split: str, device: torch.device, channels_last: bool = False) -> Split:
    """A prepared split on `device`. `channels_last`: the images keep the file's NHWC layout (an
    (N, C, H, W) view with channels-last strides), so that a batch indexed from them is channels_last
    already and needs no copy per step where the model runs channels_last (CUDA convolutions)."""
    images = np.load(Path(prepared) / f"{split}_images.npy")            # (N, H, W, C) uint8
    labels = np.load(Path(prepared) / f"{split}_labels.npy")
    x = torch.from_numpy(images).permute(0, 3, 1, 2)                     # (N, C, H, W), NHWC in memory
    return Split((x if channels_last else x.contiguous()).to(device), torch.from_numpy(labels).to(device))


class Normalize(torch.nn.Module):
    """uint8 (B, C, H, W) -> float32 normalised with the training split's mean and std."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor (random draws made on the CPU, so a seed gives the same numbers on any device)
    moved to `device` without making the host wait: through pinned memory, asynchronously."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def memory_format(x: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """The batch as the model takes it: channels_last where `nhwc` (no copy when it is already)."""
    return x.contiguous(memory_format=torch.channels_last) if nhwc else x


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False):
    """Yield (images, labels) batches; shuffled with `generator` when given, else in order;
    `drop_last`: every batch full (static shapes), the last partial one left out."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = to_device(order, split.labels.device)
    for start in range(0, n - (n % batch_size if drop_last and n >= batch_size else 0), batch_size):
        idx = order[start:start + batch_size]
        yield split.images[idx], split.labels[idx]
