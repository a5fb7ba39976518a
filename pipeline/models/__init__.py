"""Model registry: name -> builder. A builder takes the data set's shape and its own config.

    @register("mlp")
    def build(in_channels, image_size, num_classes, **cfg) -> nn.Module

Every name here must also be listed in params.schema.yaml (tests check both agree), with the
model's own config keys, so that a typo fails before any stage does work. Builders raise
ValueError when the input is too small for their pooling; the engine turns that into a
PipelineError that points at `input_size`.

The classifier head of every model is its last nn.Linear: transfer learning replaces it
(`pretrained:`) and `finetune: last_layer` trains only it.
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


def build(spec: dict, in_channels: int, image_size: tuple[int, int], num_classes: int, **extra) -> nn.Module:
    """spec: the experiment's `model:` entry, e.g. {"name": "lenet", "channels": [16, 32]}."""
    cfg = dict(spec)
    name = cfg.pop("name")
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels=in_channels, image_size=tuple(image_size),
                        num_classes=num_classes, **cfg, **extra)


def head_name(model: nn.Module) -> str:
    """Qualified name of the classifier head: the model's last nn.Linear."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head")
    return names[-1]


from pipeline.models import (ablation, basenet, cifarnet, lenet, mlp, resnet,  # noqa: E402,F401
                             tv_resnet, vgg)  # (registers the families)
