"""Building blocks shared by the conv families (VGG, CifarNet, the ablation net).

A conv stack is written like torchvision's VGG configs: an int is a 3x3 conv (padding 1) with that
many output channels, followed by optional BatchNorm and the activation; "M" is a 2x2 pooling
layer and "M4" a 4x4 one.
"""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def conv_stack(spec: list, in_channels: int, image_size: tuple[int, int], batch_norm: bool = True,
               activation: str = "relu", pool: str = "max", family: str = "model"
               ) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """The layers of `spec` and the shape (C, H, W) they output for an (in_channels, *image_size) input."""
    layers: list[nn.Module] = []
    c, (h, w) = in_channels, image_size
    for item in spec:
        if isinstance(item, int):                               # (B, c, h, w) -> (B, item, h, w)
            layers.append(nn.Conv2d(c, item, kernel_size=3, padding=1))  # with bias, as the seeds
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(ACTIVATIONS[activation](inplace=True))
            c = item
        else:                                                   # (B, c, h, w) -> (B, c, h/k, w/k)
            k = int(item[1:] or 2)
            layers.append(POOLS[pool](k))
            h, w = h // k, w // k
            if h == 0 or w == 0:
                raise ValueError(f"{family}: the pooling layers of {spec} need a larger input than "
                                 f"{image_size[0]}x{image_size[1]}")
    return nn.Sequential(*layers), (c, h, w)


def fc_layers(width: int, hidden, num_classes: int, dropout: float | None = None) -> list[nn.Module]:
    """Linear + ReLU (+ Dropout when given) per hidden width, then the classifier: (B, width) -> (B, K)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        width = h
    return layers + [nn.Linear(width, num_classes)]


def scale(spec: list, width: float) -> list:
    """The spec with every conv's channel count multiplied by `width` (for cheap instances)."""
    return [max(1, round(x * width)) if isinstance(x, int) else x for x in spec]
