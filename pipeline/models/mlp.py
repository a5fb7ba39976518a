"""A multi-layer perceptron on flattened pixels: the simplest baseline."""
from torch import nn

from pipeline.models import register


@register("mlp")
def build(in_channels, image_size, num_classes, hidden=(128,), dropout=0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]                    # (B, C, H, W) -> (B, C*H*W)
    width = in_channels * image_size[0] * image_size[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, num_classes))                # (B, num_classes)
    return nn.Sequential(*layers)
