"""seed 003's ResNet of BasicBlocks, built from scratch for 32-pixel CIFAR-100.

The report gives the recipe and the downsample (3x3 conv with stride + BN, not the usual 1x1).
The rest is the author's public code for the assignment (github.com/share020/dl,
assignments/mp4/src/part-1/src/resnet.py, whose printed log matches the report's): conv3x3 32 +
BN + ReLU + Dropout2d(0.02), stages of [2, 4, 4, 2] blocks with 32/64/128/256 channels and strides
1/2/2/2, a 4x4 max-pool (global at 32 px), fc to the classes; convs kaiming-normal (fan_out), fc
bias zero. Its block ends with `out += residual`, no ReLU after the add (`relu_after_add: true`
gives He et al.'s block).
"""
from torch import nn

from pipeline.models._registry import register


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, relu_after_add: bool):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else nn.Identity())
        self.out_relu = nn.ReLU(inplace=True) if relu_after_add else nn.Identity()

    def forward(self, x):                                       # (B, c_in, h, w) -> (B, c_out, h/s, w/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.out_relu(out + self.downsample(x))       # the seed's: the sum, negatives and all


class ResNet(nn.Module):
    def __init__(self, in_channels, num_classes, stem, channels, blocks, strides, dropout, relu_after_add):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, stem), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
                                  nn.Dropout2d(dropout))        # (B, stem, H, W); drops whole channels
        stages, c = [], stem
        for c_out, n, s in zip(channels, blocks, strides):      # each stage: (B, c, h, w) -> (B, c_out, h/s, w/s)
            stages.append(nn.Sequential(*[BasicBlock(c if i == 0 else c_out, c_out, s if i == 0 else 1,
                                                     relu_after_add) for i in range(n)]))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)                     # (B, c, 1, 1)
        self.fc = nn.Linear(c, num_classes)                     # (B, num_classes)
        for m in self.modules():                                # the author's init (BatchNorm's is torch's)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register("resnet")
def build(in_channels, image_size, num_classes, stem=32, channels=(32, 64, 128, 256), blocks=(2, 4, 4, 2),
          strides=(1, 2, 2, 2), dropout=0.02, relu_after_add=False) -> nn.Module:
    if not len(channels) == len(blocks) == len(strides):
        raise ValueError(f"resnet: channels, blocks and strides need one entry per stage, got "
                         f"{len(channels)}, {len(blocks)}, {len(strides)}")
    return ResNet(in_channels, num_classes, stem, channels, blocks, strides, dropout, relu_after_add)
