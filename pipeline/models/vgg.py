"""The VGG family: a stack of 3x3 conv + BatchNorm + ReLU with pooling, then an fc head.

seed 000 (vgg16bn_small_head): the 13-conv VGG-16-BN body, flatten, dropout 0.5 fc head 256-256.
seed 001 (vgg19 ... vgg_custom_128_aug): VGG-19-BN, then five blocks of two convs, AdaptiveAvgPool2d(1), fc 4096
(steps 6-9 with a Dropout(0.2) before the last fc: final_dropout).
"""
from torch import nn

from pipeline.models._registry import register
from pipeline.models.blocks import conv_stack

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register("vgg")
def build(in_channels, image_size, num_classes, layers=tuple(VGG16), batch_norm=True,
          global_pool="none", head=(256, 256), dropout=0.0, final_dropout=0.0) -> nn.Module:
    features, (c, h, w) = conv_stack(list(layers), in_channels, image_size, batch_norm, family="vgg")
    if global_pool == "avg":                                    # (B, c, h, w) -> (B, c, 1, 1)
        pool, width = nn.AdaptiveAvgPool2d(1), c
    else:
        pool, width = nn.Identity(), c * h * w
    classifier: list[nn.Module] = [nn.Flatten()]                # (B, width)
    for f in head:                                              # seed 000: Dropout before each hidden fc
        if dropout:
            classifier.append(nn.Dropout(dropout))
        classifier += [nn.Linear(width, f), nn.ReLU(inplace=True)]
        width = f
    if final_dropout:                                           # seed 001 step 6: Dropout(0.2) before the last fc
        classifier.append(nn.Dropout(final_dropout))
    classifier.append(nn.Linear(width, num_classes))            # (B, num_classes)
    return nn.Sequential(features, pool, nn.Sequential(*classifier))
