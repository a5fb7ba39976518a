"""The course's BaseNet (seed 001's starting point; 24% val on CIFAR-100 after 15 epochs).

Most faithful reading (the reports do not print it; this is the course starter code): two
unpadded 5x5 convs (6, 16) each with ReLU and 2x2 max-pool, then fc 400 -> 50 (TOTAL_CLASSES // 2)
-> classes. It differs from `lenet` by the valid (unpadded) convolutions: 32 -> 28 -> 14 -> 10 -> 5.
"""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import fc_layers


@register("basenet")
def build(in_channels, image_size, num_classes, channels=(6, 16), fc=(50,)) -> nn.Module:
    layers: list[nn.Module] = []
    c, (h, w) = in_channels, image_size
    for out in channels:                                        # (B, c, h, w) -> (B, out, (h-4)/2, (w-4)/2)
        h, w = (h - 4) // 2, (w - 4) // 2
        if h <= 0 or w <= 0:
            raise ValueError(f"basenet: {len(channels)} unpadded 5x5 conv + pool blocks need a larger "
                             f"input than {image_size[0]}x{image_size[1]}")
        layers += [nn.Conv2d(c, out, kernel_size=5), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = out
    layers.append(nn.Flatten())                                 # (B, c*h*w): 16*5*5 = 400 at 32 px
    layers += fc_layers(c * h * w, fc, num_classes)             # (B, num_classes)
    return nn.Sequential(*layers)
