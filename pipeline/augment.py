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
# Under DDP a rank augments only its slice (`part`) of a global batch of `n` images: every op
# draws for all n, in the same order, and keeps its slice's draws, so each image gets the draw it
# gets on one process.
ALL = slice(None)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _coin(n: int, p: float, g: torch.Generator, device, part: slice) -> torch.Tensor:
    return to_device((torch.rand(n, generator=g) < p)[part], device).view(-1, 1, 1, 1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float -> (B, 1, H, W) luminance (C = 3), or x itself (C = 1)."""
    if x.shape[1] != 3:
        return x
    return sum(w * x[:, i:i + 1] for i, w in enumerate(GREY))


def crop(x, g, padding: int = 4, *, n=None, part=ALL):
    """RandomCrop(size of x, padding): zero-pad, then cut a random window per sample."""
    b, _, h, w = x.shape
    n = n or b
    padded = F.pad(x, (padding,) * 4)                                       # (B, C, H+2p, W+2p)
    oy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=g)[part], x.device)
    ox = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=g)[part], x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def hflip(x, g, p: float = 0.5, *, n=None, part=ALL):
    return torch.where(_coin(n or len(x), p, g, x.device, part), x.flip(-1), x)


def vflip(x, g, p: float = 0.5, *, n=None, part=ALL):
    return torch.where(_coin(n or len(x), p, g, x.device, part), x.flip(-2), x)


def grayscale(x, g, p: float = 0.1, *, n=None, part=ALL):
    """RandomGrayscale(p): the chosen samples become grey in every channel."""
    return torch.where(_coin(n or len(x), p, g, x.device, part), _to_uint8(grey(x.float())).expand_as(x), x)


def color_jitter(x, g, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, *, n=None, part=ALL):
    """ColorJitter without hue: factors uniform in [max(0, 1-s), 1+s], the three adjustments applied
    in a random order drawn per sample, as torchvision draws one per call. Each is a blend
    f * y + (1 - f) * target (target: black, the image's mean grey, its grey image): per position
    in the order, one blend, each sample with its own op's factor and target."""
    n, y = n or len(x), x.float()
    strengths = (brightness, contrast, saturation)
    order = to_device(torch.rand(n, 3, generator=g).argsort(1)[part], x.device)   # (B, 3): a permutation each
    factors = [to_device(_uniform(n, max(0.0, 1 - s), 1 + s, g)[part], x.device).view(-1, 1, 1, 1) if s else None
               for s in strengths]
    if not any(strengths):
        return x
    for position in range(3):
        op = order[:, position].view(-1, 1, 1, 1)                           # (B, 1, 1, 1): 0, 1 or 2
        f = torch.ones_like(y[:, :1, :1, :1])                                  # an op of strength 0: y kept
        for i, factor in enumerate(factors):
            if factor is not None:
                f = torch.where(op == i, factor, f)
        grey_y = grey(y) if contrast or saturation else y[:, :1]
        target = torch.where(op == 0, 0.0, torch.where(op == 1, grey_y.mean((1, 2, 3), keepdim=True), grey_y))
        y = (f * y + (1 - f) * target).clamp(0, 255)
    return _to_uint8(y)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample x (B, C, H, W) at the affine grid theta (B, 2, 3), zero outside; uint8 in, uint8 out."""
    grid = F.affine_grid(to_device(theta, x.device), list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False))


def rotation(x, g, degrees: float = 30.0, *, n=None, part=ALL):
    """RandomRotation(degrees): angle uniform in [-degrees, degrees] about the centre, nearest, zero fill."""
    a = _uniform(n or len(x), -degrees, degrees, g)[part] * math.pi / 180
    h, w = x.shape[-2:]
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos(), -a.sin() * h / w  # grid coords are in [-1, 1] per axis
    theta[:, 1, 0], theta[:, 1, 1] = a.sin() * w / h, a.cos()
    return _warp(x, theta, "nearest")


def crop_boxes(n: int, h: int, w: int, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """n boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop.get_params draws
    one: up to 10 tries of a random area (a `scale` share of the image) and log-uniform aspect,
    the first that fits kept; else the whole image, cropped to the nearest allowed aspect."""
    tries = 10
    area = _uniform(n * tries, *scale, g).view(n, tries) * h * w
    aspect = torch.exp(_uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), g)).view(n, tries)
    bw = (area * aspect).sqrt().round()
    bh = (area / aspect).sqrt().round()
    fits = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = fits.float().argmax(1)                                           # the first try that fits
    bw, bh = bw.gather(1, first[:, None])[:, 0], bh.gather(1, first[:, None])[:, 0]
    top = (torch.rand(n, generator=g) * (h - bh + 1)).floor()
    left = (torch.rand(n, generator=g) * (w - bw + 1)).floor()
    if w / h < min(ratio):
        fw, fh = w, round(w / min(ratio))
    elif w / h > max(ratio):
        fw, fh = round(h * max(ratio)), h
    else:
        fw, fh = w, h
    none = ~fits.any(1)
    bw, bh = torch.where(none, float(fw), bw), torch.where(none, float(fh), bh)
    top, left = torch.where(none, float((h - fh) // 2), top), torch.where(none, float((w - fw) // 2), left)
    return torch.stack([top, left, bh, bw], 1)                               # (n, 4) pixels


def random_resized_crop(x, g, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), size: int | None = None, *, n=None, part=ALL):
    """RandomResizedCrop(size): a box per sample (crop_boxes), cut from the stored image and
    resampled once, bilinearly, straight to size x size (the model's input size; default x's).
    No antialiasing: boxes are mostly enlarged, and shrunk at most by the stored/input ratio."""
    b, h, w = len(x), *x.shape[-2:]
    size = size or h
    top, left, bh, bw = crop_boxes(n or b, h, w, scale, ratio, g)[part].unbind(1)
    theta = torch.zeros(b, 2, 3)                                             # output [-1, 1] -> the box
    theta[:, 0, 0], theta[:, 0, 2] = bw / w, (2 * left + bw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = bh / h, (2 * top + bh) / h - 1
    grid = F.affine_grid(to_device(theta, x.device), [b, x.shape[1], size, size], align_corners=False)
    return _to_uint8(F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False))


def resize_crop(x, g, resize: int, size: int | None = None, *, n=None, part=ALL):
    """Resize(resize) + RandomCrop(size) of a square image: the image resampled (bilinear) to
    resize x resize and a window cut at integer offsets in [0, resize - size], drawn per sample.
    One grid_sample at exactly the points resizing then cropping samples, without the large
    intermediate image (bilinear, no antialias: these resizes enlarge)."""
    b, h = len(x), x.shape[-2]          # square images (CIFAR)
    size = size or h
    if resize < size:
        raise ValueError(f"resize_crop: resize {resize} is smaller than the crop, {size} px")
    oy, ox = (torch.randint(0, resize - size + 1, (n or b,), generator=g)[part].float() for _ in range(2))
    theta = torch.zeros(b, 2, 3)                        # output [-1, 1] -> the window, in the input's [-1, 1]
    theta[:, 0, 0] = theta[:, 1, 1] = size / resize
    theta[:, 0, 2], theta[:, 1, 2] = (2 * ox + size) / resize - 1, (2 * oy + size) / resize - 1
    grid = F.affine_grid(to_device(theta, x.device), [b, x.shape[1], size, size], align_corners=False)
    return _to_uint8(F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False))


OPS = {"crop": crop, "hflip": hflip, "vflip": vflip, "grayscale": grayscale, "color_jitter": color_jitter,
       "rotation": rotation, "random_resized_crop": random_resized_crop, "resize_crop": resize_crop}


def apply(ops: list[dict], x: torch.Tensor, g: torch.Generator, size: int | None = None,
          n: int | None = None, part: slice = ALL) -> torch.Tensor:
    """Apply the configured ops in order to a uint8 batch (B, C, H, W); returns uint8. Shapes are
    kept, except that random_resized_crop and resize_crop resample to `size` (the model's input size).
    `x` may be the slice `part` of a global batch of `n` images (DDP): the draws are the global ones."""
    for op in ops:
        kwargs = {k: v for k, v in op.items() if k != "name"} | {"n": n, "part": part}
        if op["name"] in ("random_resized_crop", "resize_crop"):
            kwargs["size"] = size
        x = OPS[op["name"]](x, g, **kwargs)
    return x


class Resize(nn.Module):
    """Test-time geometry (and train-time, after augmentation): resize the shorter side to
    `short_side` (default `size`), then centre-crop size x size, like torchvision's
    Resize(short_side) + CenterCrop(size). An input already size x size passes as it is."""

    def __init__(self, size: int, short_side: int | None = None):
        super().__init__()
        self.size, self.short_side = size, short_side or size

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (B, C, h, w) float -> (B, C, size, size)
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size):
            return x
        s = self.short_side
        if min(h, w) != s:
            # torchvision's tensor Resize is this interpolate call; importing torchvision costs ~2 s per stage
            nh, nw = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
            # antialias only when shrinking: enlarging gives the same pixels (to float rounding) at more cost
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
        nh, nw = x.shape[-2:]
        top, left = round((nh - self.size) / 2), round((nw - self.size) / 2)
        return x[..., top:top + self.size, left:left + self.size]

    def extra_repr(self) -> str:
        return f"size={self.size}, short_side={self.short_side}"
