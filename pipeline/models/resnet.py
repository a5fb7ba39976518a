"""seed 003's ResNet of BasicBlocks, built from scratch for 32-pixel CIFAR-100.

The report gives the recipe and the downsample (3x3 conv with stride + BN, not the usual 1x1);
the stage layout is the course assignment's (most faithful reading; not printed in the report):
conv3x3 32 + BN + ReLU, stages of [2, 4, 4, 2] blocks with 32/64/128/256 channels and strides
1/2/2/2, global max-pool, fc to the classes.
"""
from torch import nn

from pipeline.models._registry import register


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):                                       # (B, c_in, h, w) -> (B, c_out, h/s, w/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    def __init__(self, in_channels, num_classes, stem, channels, blocks, strides, dropout):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, stem), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout))          # (B, stem, H, W)
        stages, c = [], stem
        for c_out, n, s in zip(channels, blocks, strides):      # each stage: (B, c, h, w) -> (B, c_out, h/s, w/s)
            stages.append(nn.Sequential(*[BasicBlock(c if i == 0 else c_out, c_out, s if i == 0 else 1)
                                          for i in range(n)]))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)                     # (B, c, 1, 1)
        self.fc = nn.Linear(c, num_classes)                     # (B, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register("resnet")
def build(in_channels, image_size, num_classes, stem=32, channels=(32, 64, 128, 256), blocks=(2, 4, 4, 2),
          strides=(1, 2, 2, 2), dropout=0.0) -> nn.Module:
    if not len(channels) == len(blocks) == len(strides):
        raise ValueError(f"resnet: channels, blocks and strides need one entry per stage, got "
                         f"{len(channels)}, {len(blocks)}, {len(strides)}")
    return ResNet(in_channels, num_classes, stem, channels, blocks, strides, dropout)
