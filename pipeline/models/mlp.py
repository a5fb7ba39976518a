"""A multi-layer perceptron on flattened pixels: the simplest baseline."""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import fc_layers


@register("mlp")
def build(in_channels, image_size, num_classes, hidden=(128,), dropout=0.0) -> nn.Module:
    width = in_channels * image_size[0] * image_size[1]
    return nn.Sequential(nn.Flatten(),                          # (B, C, H, W) -> (B, C*H*W)
                         *fc_layers(width, hidden, num_classes, dropout))   # (B, num_classes)
