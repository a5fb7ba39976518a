"""seed 002's nets: cifarnet_best / cifarnet_worst (CIFAR-10) and the two Tiny ImageNet nets.

Layer lists are read off the modules the seed printed (module order = forward order, except where
noted). `width` scales every channel count, for cheap demo instances only.
"""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import conv_stack, scale

# conv1 64 / conv2_0 128 + pool / conv2_1, conv2_2 128 / conv3_0 256 + pool / conv4_0 256 + pool /
# conv4_1, conv4_2 256 / maxpool 4: 32 px -> 1x1x256 -> Linear(256, 10, bias=False).
CIFARNET_BEST = [64, 128, "M", 128, 128, 256, "M", 256, "M", 256, 256, "M4"]
# Ambiguous: the seed prints the same modules but Linear(4096, 200) at 64 px, i.e. 256 x 4 x 4, one
# 2x2 pool fewer than printed. Reading: pool4 is defined but unused in forward().
TINYNET = [64, 128, "M", 128, 128, 256, "M", 256, 256, 256, "M4"]
# + conv5_0 512 + pool5, conv6_0 512 + pool6, conv6_1, conv6_2 512, pool7: 64 px -> 1x1x512.
TINYNET_DEEPER = [64, 128, "M", 128, 128, 256, "M", 256, "M", 256, 256, 512, "M", 512, "M", 512, 512, "M"]


def _plain(spec, in_channels, image_size, num_classes, width, family) -> nn.Module:
    features, (c, h, w) = conv_stack(scale(spec, width), in_channels, image_size, family=family)
    return nn.Sequential(features, nn.Flatten(),                # (B, c*h*w)
                         nn.Linear(c * h * w, num_classes, bias=False))


@register("cifarnet_best")
def build_best(in_channels, image_size, num_classes, width=1.0) -> nn.Module:
    return _plain(CIFARNET_BEST, in_channels, image_size, num_classes, width, "cifarnet_best")


@register("tinynet")
def build_tinynet(in_channels, image_size, num_classes, width=1.0) -> nn.Module:
    return _plain(TINYNET, in_channels, image_size, num_classes, width, "tinynet")


@register("tinynet_deeper")
def build_tinynet_deeper(in_channels, image_size, num_classes, width=1.0) -> nn.Module:
    return _plain(TINYNET_DEEPER, in_channels, image_size, num_classes, width, "tinynet_deeper")


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
