"""Layer tables: one row per leaf layer, from a real forward pass (torchinfo) at the model's input size.

Columns of layers.csv (what the seeds drew by hand):
    layer         dotted module name, e.g. features.0 (the model's own names)
    type          module class, e.g. Conv2d
    kernel        e.g. 3x3 (conv and pooling layers; empty otherwise)
    stride        e.g. 1x1 (conv and pooling layers; empty otherwise)
    output_shape  per-sample output, C x H x W or features, e.g. 64x32x32
    params        parameters of this layer
    trainable     trainable parameters of this layer (0 for frozen layers under finetune: last_layer)
"""
from __future__ import annotations

import pandas as pd
from torch import nn

COLUMNS = ["layer", "type", "kernel", "stride", "output_shape", "params", "trainable"]


def _pair(v) -> str:
    if v is None:
        return ""
    v = (v, v) if isinstance(v, int) else tuple(v)
    return "x".join(map(str, v))


def layer_table(net: nn.Module, in_channels: int, size: tuple[int, int]) -> pd.DataFrame:
    """The leaf layers of `net` run on one (in_channels, *size) input, in forward order."""
    import torchinfo
    names = {id(m): n for n, m in net.named_modules()}
    info = torchinfo.summary(net, input_size=(1, in_channels, *size), device="cpu", mode="eval",
                             verbose=0, depth=100)
    rows = []
    for li in info.summary_list:
        if not li.is_leaf_layer or li.module is None:
            continue
        m = li.module
        out = li.output_size[1:] if li.output_size else []
        rows.append({"layer": names.get(id(m), li.var_name), "type": li.class_name,
                     "kernel": _pair(getattr(m, "kernel_size", None)),
                     "stride": _pair(getattr(m, "stride", None)),
                     "output_shape": "x".join(map(str, out)),
                     "params": sum(p.numel() for p in m.parameters(recurse=False)),
                     "trainable": sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad)})
    return pd.DataFrame(rows, columns=COLUMNS)

