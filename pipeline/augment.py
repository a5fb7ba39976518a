"""Per-sample, seeded augmentation of uint8 image batches on the training device, and the resize.

torchvision.transforms.v2 applied to a batch tensor draws ONE set of random parameters for the
whole batch, so the random ops are written here on batches: every op draws its parameters for
each sample from a CPU torch.Generator (same seed -> same images, on any device), moves them to
the device asynchronously (pinned memory: the host never waits) and applies them with one batched
tensor operation. Ops follow torchvision's semantics and defaults (zero fill,
nearest rotation, ITU-R 601 grey), listed in params as e.g.

    augment: [{name: crop, padding: 4}, {name: hflip}]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data import to_device

GREY = (0.299, 0.587, 0.114)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _coin(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return to_device(torch.rand(n, generator=g) < p, device).view(-1, 1, 1, 1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float -> (B, 1, H, W) luminance (C = 3), or x itself (C = 1)."""
    if x.shape[1] != 3:
        return x
    return sum(w * x[:, i:i + 1] for i, w in enumerate(GREY))


def crop(x, g, padding: int = 4):
    """RandomCrop(size of x, padding): zero-pad, then cut a random window per sample."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)                                       # (B, C, H+2p, W+2p)
    oy = to_device(torch.randint(0, 2 * padding + 1, (b,), generator=g), x.device)
    ox = to_device(torch.randint(0, 2 * padding + 1, (b,), generator=g), x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def hflip(x, g, p: float = 0.5):
    return torch.where(_coin(len(x), p, g, x.device), x.flip(-1), x)


def vflip(x, g, p: float = 0.5):
    return torch.where(_coin(len(x), p, g, x.device), x.flip(-2), x)


def grayscale(x, g, p: float = 0.1):
    """RandomGrayscale(p): the chosen samples become grey in every channel."""
    return torch.where(_coin(len(x), p, g, x.device), _to_uint8(grey(x.float())).expand_as(x), x)


def color_jitter(x, g, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
    """ColorJitter without hue, factors uniform in [max(0, 1-s), 1+s], applied in this order."""
    b, y = len(x), x.float()
    for s, blend_with in ((brightness, lambda y: torch.zeros_like(y)),
                          (contrast, lambda y: grey(y).mean((1, 2, 3), keepdim=True)),
                          (saturation, grey)):
        if s:
            f = to_device(_uniform(b, max(0.0, 1 - s), 1 + s, g), x.device).view(-1, 1, 1, 1)
            y = (f * y + (1 - f) * blend_with(y)).clamp(0, 255)
    return _to_uint8(y)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample x (B, C, H, W) at the affine grid theta (B, 2, 3), zero outside; uint8 in, uint8 out."""
    grid = F.affine_grid(to_device(theta, x.device), list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False))


def rotation(x, g, degrees: float = 30.0):
    """RandomRotation(degrees): angle uniform in [-degrees, degrees] about the centre, nearest, zero fill."""
    a = _uniform(len(x), -degrees, degrees, g) * math.pi / 180
    h, w = x.shape[-2:]
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos(), -a.sin() * h / w  # grid coords are in [-1, 1] per axis
    theta[:, 1, 0], theta[:, 1, 1] = a.sin() * w / h, a.cos()
    return _warp(x, theta, "nearest")


def random_resized_crop(x, g, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop to x's own size (bilinear): a box of random area and aspect per sample.

    Boxes too large for the image are shrunk to fit rather than redrawn (torchvision retries 10
    times), which keeps the op one batched draw.
    """
    b, h, w = len(x), *x.shape[-2:]
    area = _uniform(b, *scale, g) * h * w
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), g))
    cw = (area * aspect).sqrt().clamp(1, w)
    ch = (area / aspect).sqrt().clamp(1, h)
    cx = cw / 2 + torch.rand(b, generator=g) * (w - cw)                     # box centre, pixels
    cy = ch / 2 + torch.rand(b, generator=g) * (h - ch)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw / w, 2 * cx / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, 2 * cy / h - 1
    return _warp(x, theta, "bilinear")


OPS = {"crop": crop, "hflip": hflip, "vflip": vflip, "grayscale": grayscale, "color_jitter": color_jitter,
       "rotation": rotation, "random_resized_crop": random_resized_crop}


def apply(ops: list[dict], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply the configured ops in order to a uint8 batch (B, C, H, W); returns uint8, same shape."""
    for op in ops:
        kwargs = {k: v for k, v in op.items() if k != "name"}
        x = OPS[op["name"]](x, g, **kwargs)
    return x


class Resize(nn.Module):
    """Test-time geometry (and train-time, after augmentation): resize the shorter side to `size`,
    then centre-crop size x size, like torchvision's Resize(size) + CenterCrop(size)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (B, C, h, w) float -> (B, C, size, size)
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size):
            return x
        # torchvision's tensor Resize is this interpolate call; importing torchvision costs ~2 s per stage
        nh, nw = (self.size, max(self.size, round(w * self.size / h))) if h <= w else \
                 (max(self.size, round(h * self.size / w)), self.size)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = round((nh - self.size) / 2), round((nw - self.size) / 2)
        return x[..., top:top + self.size, left:left + self.size]

    def extra_repr(self) -> str:
        return f"size={self.size}"
