"""The model registry itself: name -> builder, and what every model shares (its head). Apart from
the package's __init__ (which imports every family so that each registers itself), as timm's
_registry.py is: a family imports this module, never the package, so no import goes in a circle.
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
