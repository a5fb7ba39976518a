"""seed 002's nets: cifarnet_best / cifarnet_worst (CIFAR-10) and the two Tiny ImageNet nets.

Layer lists are read off the modules the seed printed (module order = forward order, except where
noted). `width` scales every channel count, for cheap demo instances only.

A printout cannot show an addition. cifarnet_best's is module for module the well-known ResNet-9
(64; 128 + pool and a pair of 128 convs; 256 + pool; 256 + pool and a pair of 256 convs;
MaxPool(4); an fc without bias), whose pairs add their input to their output, and the author calls
the Tiny ImageNet variant "a deeper convolution resnet network". `residual: true` adds each pair's
input to its output as ResNet-9 does (x + relu(bn(conv(relu(bn(conv(x))))))); false is the plain
reading of the printout. The parameters are the same either way.
"""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import conv_stack, scale

# ("R", c): a pair of c-channel convs, the ones ResNet-9 makes residual.
# conv1 64 / conv2_0 128 + pool / conv2_1, conv2_2 128 / conv3_0 256 + pool / conv4_0 256 + pool /
# conv4_1, conv4_2 256 / maxpool 4: 32 px -> 1x1x256 -> Linear(256, 10, bias=False).
CIFARNET_BEST = [64, 128, "M", ("R", 128), 256, "M", 256, "M", ("R", 256), "M4"]
# Ambiguous: the seed prints the same modules but Linear(4096, 200) at 64 px, i.e. 256 x 4 x 4, one
# 2x2 pool fewer than printed. Reading: pool4 is defined but unused in forward(). Any of the three
# fits the shapes; dropping the last one is the least change to the CIFAR net's compute (only the
# conv4 pair runs at 16 px instead of 8), the edit a 32 -> 64 px port most likely made.
TINYNET = [64, 128, "M", ("R", 128), 256, "M", 256, ("R", 256), "M4"]
# + conv5_0 512 + pool5, conv6_0 512 + pool6, conv6_1, conv6_2 512, pool7: 64 px -> 1x1x512.
TINYNET_DEEPER = [64, 128, "M", ("R", 128), 256, "M", 256, "M", ("R", 256), 512, "M", 512, "M", ("R", 512), "M"]


class Residual(nn.Module):
    """x + body(x), the body keeping channels and size (ResNet-9's residual pair)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):                                       # (B, c, h, w) -> (B, c, h, w)
        return x + self.body(x)


def _features(spec, in_channels, image_size, width, residual, family) -> tuple[nn.Module, tuple[int, int, int]]:
    """The conv body of `spec` and its output shape (C, H, W); pairs residual or plain."""
    if not residual:   # one flat stack, as the printout lists it
        flat = [x for item in spec for x in ([item[1]] * 2 if isinstance(item, tuple) else [item])]
        return conv_stack(scale(flat, width), in_channels, image_size, family=family)
    parts, shape, run = [], (in_channels, *image_size), []
    for item in [*spec, None]:
        if isinstance(item, tuple) or item is None:
            if run:
                stack, shape = conv_stack(scale(run, width), shape[0], shape[1:], family=family)
                parts.append(stack)
                run = []
            if item is not None:
                pair, shape = conv_stack(scale([item[1]] * 2, width), shape[0], shape[1:], family=family)
                parts.append(Residual(pair))
        else:
            run.append(item)
    return nn.Sequential(*parts), shape


def _net(spec, in_channels, image_size, num_classes, width, residual, family) -> nn.Module:
    features, (c, h, w) = _features(spec, in_channels, image_size, width, residual, family)
    return nn.Sequential(features, nn.Flatten(),                # (B, c*h*w)
                         nn.Linear(c * h * w, num_classes, bias=False))


@register("cifarnet_best")
def build_best(in_channels, image_size, num_classes, width=1.0, residual=False) -> nn.Module:
    return _net(CIFARNET_BEST, in_channels, image_size, num_classes, width, residual, "cifarnet_best")


@register("tinynet")
def build_tinynet(in_channels, image_size, num_classes, width=1.0, residual=False) -> nn.Module:
    return _net(TINYNET, in_channels, image_size, num_classes, width, residual, "tinynet")


@register("tinynet_deeper")
def build_tinynet_deeper(in_channels, image_size, num_classes, width=1.0, residual=False) -> nn.Module:
    return _net(TINYNET_DEEPER, in_channels, image_size, num_classes, width, residual, "tinynet_deeper")


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))), channels and size unchanged (the seed's resblockN_k)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):                                       # (B, c, h, w) -> (B, c, h, w)
        return x + self.body(x)


class CifarNetWorst(nn.Module):
    """Deep, narrow, residual-style (10 / 100 / 256 / 512 channels) with a long fc stack.

    The seed prints modules, not forward(); reading: each stage is conv -> BN -> ReLU -> 4 res
    blocks -> 2x2 max-pool (maxpool_1..3), then conv4 (3x3, no padding) + pool, BN, ReLU, and fc
    512-512-500-500-100-100-100-10 with ReLU between. 32 px: 34 -> 17 -> 8 -> 4 -> 2 -> 1.
    """

    def __init__(self, in_channels, image_size, num_classes, width=1.0):
        super().__init__()
        c1, c2, c3, c4 = scale([10, 100, 256, 512], width)
        h = (image_size[0] + 2) // 2 // 2 // 2                  # conv1 (5x5, pad 3) grows by 2
        if (h - 2) // 2 < 1:
            raise ValueError(f"cifarnet_worst needs at least 30x30 input, got {image_size[0]}x{image_size[1]}")

        def stage(c_in, c_out, k=3, pad=1):
            return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=pad), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 *[ResBlock(c_out) for _ in range(4)], nn.MaxPool2d(2))
        self.stage1 = stage(in_channels, c1, k=5, pad=3)        # (B, c1, (H+2)/2, ...)
        self.stage2 = stage(c1, c2)                             # (B, c2, /2)
        self.stage3 = stage(c2, c3)                             # (B, c3, /2)
        self.conv4 = nn.Sequential(nn.Conv2d(c3, c4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(c4), nn.ReLU())
        w = (image_size[1] + 2) // 2 // 2 // 2
        fc, layers, width_in = [512, 500, 500, 100, 100, 100], [nn.Flatten()], c4 * ((h - 2) // 2) * ((w - 2) // 2)
        for f in fc:
            layers += [nn.Linear(width_in, f), nn.ReLU()]
            width_in = f
        self.head = nn.Sequential(*layers, nn.Linear(width_in, num_classes))

    def forward(self, x):                                       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.conv4(self.stage3(self.stage2(self.stage1(x)))))


@register("cifarnet_worst")
def build_worst(in_channels, image_size, num_classes, width=1.0) -> nn.Module:
    return CifarNetWorst(in_channels, image_size, num_classes, width)
