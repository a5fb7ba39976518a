"""Transfer learning: torchvision's ResNet-18 / ResNet-50 with a new head (seeds 000, 001, 003).

`weights="imagenet"` (set by the engine from `pretrained: imagenet`, never at evaluation) loads
torchvision's IMAGENET1K_V1 weights, the ones the seeds used, from the cache under TORCH_HOME;
offline with no cached file this is a PipelineError naming the file and where to put it. The
1000-class fc is replaced by a fresh one for the data set's classes; a 1-channel input gets a
conv1 whose weights are the RGB weights summed (grey = R = G = B).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from pipeline.models._registry import register

ARCHS = ("resnet18", "resnet50")


def weights_file(arch: str) -> tuple[str, Path]:
    """(URL, cache path) of the ImageNet weights torchvision would download for `arch`."""
    import torchvision  # here, not at the top: the import costs ~2 s in every stage that loads models
    url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_imagenet(net: nn.Module, arch: str) -> None:
    """Load `arch`'s ImageNet weights into net. A cached file is read whole, tensors only; one
    that cannot be read, or holds other weights, is named with the fix (delete it, fetch it again),
    never a traceback: torch's own message would even suggest weights_only=False."""
    from pipeline.stage import PipelineError
    url, path = weights_file(arch)
    fetch = f"delete it and fetch it again: download {url} (offline, elsewhere) and copy it to {path}"
    if path.is_file():
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:   # hostile bytes raise what they like: UnpicklingError, RuntimeError, ...
            why = "not a file of tensors" if isinstance(e, pickle.UnpicklingError) else str(e).split(". ")[0]
            raise PipelineError(f"pretrained: imagenet: {path} is damaged or not the {arch} ImageNet weights "
                                f"({type(e).__name__}: {' '.join(why.split())[:200]}); {fetch}") from None
        return
    try:  # not cached: downloads it there (torch checks its sha256 against the name)
        net.load_state_dict(torch.hub.load_state_dict_from_url(
            url, model_dir=str(path.parent), map_location="cpu", progress=True, check_hash=True, weights_only=True))
    except (OSError, RuntimeError) as e:
        raise PipelineError(
            f"pretrained: imagenet: cannot load the {arch} ImageNet weights {path.name} ({e}); offline, "
            f"download {url} elsewhere and copy it to {path} (TORCH_HOME={path.parent.parent.parent}), "
            f"or set pretrained to another experiment's name or null") from None


@register("tv_resnet")
def build(in_channels, image_size, num_classes, arch="resnet18", weights=None) -> nn.Module:
    import torchvision
    net = torchvision.models.get_model(arch, weights=None)                 # (B, 3, H, W) -> (B, 1000)
    if weights == "imagenet":
        load_imagenet(net, arch)
    if in_channels != 3:
        rgb = net.conv1.weight.detach()                                     # (64, 3, 7, 7)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights == "imagenet" and in_channels == 1:
            net.conv1.weight.data.copy_(rgb.sum(1, keepdim=True))
    net.fc = nn.Linear(net.fc.in_features, num_classes)                     # (B, num_classes), new head
    return net
