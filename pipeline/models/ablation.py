"""seed 004's ablation family as one configurable model.

Base: 3 x (conv 3x3 -> [BN] -> act -> 2x2 pool), fc 2048-1024-512-100. The variants swap the
activation (ReLU / ELU / LeakyReLU, also used in the fc stack), the pooling (max / avg), add
BatchNorm, a 4th unpooled conv (256) and longer fc stacks, each hidden fc followed by Dropout(p).
"""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import ACTIVATIONS, conv_stack


@register("ablation")
def build(in_channels, image_size, num_classes, convs=(32, "M", 64, "M", 128, "M"), fc=(1024, 512),
          activation="relu", pool="max", batch_norm=False, dropout=0.0) -> nn.Module:
    features, (c, h, w) = conv_stack(list(convs), in_channels, image_size, batch_norm, activation,
                                     pool, family="ablation")
    layers: list[nn.Module] = [features, nn.Flatten()]          # (B, c*h*w); 128*4*4 = 2048 at 32 px
    width = c * h * w
    for f in fc:                                                # Linear -> act -> Dropout, as the seed
        layers += [nn.Linear(width, f), ACTIVATIONS[activation](inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = f
    layers.append(nn.Linear(width, num_classes))                # (B, num_classes)
    return nn.Sequential(*layers)
