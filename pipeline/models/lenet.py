"""LeNet-style CNN: conv 5x5 (same padding) + ReLU + 2x2 max-pool blocks, then an fc stack."""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import fc_layers


@register("lenet")
def build(in_channels, image_size, num_classes, channels=(6, 16), fc=(120, 84)) -> nn.Module:
    layers: list[nn.Module] = []
    h, w, c = image_size[0], image_size[1], in_channels
    for out in channels:                                        # (B, c, h, w) -> (B, out, h/2, w/2)
        layers += [nn.Conv2d(c, out, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
        if h == 0 or w == 0:
            raise ValueError(f"lenet: {len(channels)} pooling blocks are too many for "
                             f"{image_size[0]}x{image_size[1]} input; use fewer `channels`")
    layers.append(nn.Flatten())                                 # (B, c*h*w)
    layers += fc_layers(c * h * w, fc, num_classes)             # (B, num_classes)
    return nn.Sequential(*layers)
