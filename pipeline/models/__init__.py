"""Model registry: name -> builder. A builder takes the data set's shape and its own config.

    @register("mlp")
    def build(in_channels, image_size, num_classes, **cfg) -> nn.Module

Every name here must also be listed in params.schema.yaml (tests check both agree), with the
model's own config keys, so that a typo fails before any stage does work.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(builder):
        MODELS[name] = builder
        return builder
    return wrap


def build(spec: dict, in_channels: int, image_size: tuple[int, int], num_classes: int) -> nn.Module:
    """spec: the experiment's `model:` entry, e.g. {"name": "lenet", "channels": [16, 32]}."""
    cfg = dict(spec)
    name = cfg.pop("name")
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels=in_channels, image_size=tuple(image_size),
                        num_classes=num_classes, **cfg)


from pipeline.models import lenet, mlp  # noqa: E402,F401  (registers the families)
