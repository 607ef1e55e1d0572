"""ResNet family: ImageNet ResNet-18/50, CIFAR ResNet-56, and the small MNIST demo network."""

from __future__ import annotations

from torch import nn

from toolchain.models._registry import register_model


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_ch, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != width:
            self.downsample = nn.Sequential(*_conv_bn(in_ch, width, 1, stride))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_ch, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, stride))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet: a stem, stages of residual blocks, global pooling and a linear classifier."""

    def __init__(self, block, depths, widths, num_classes: int, in_channels: int = 3, imagenet_stem: bool = True):
        super().__init__()
        stem_width = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(
                *_conv_bn(in_channels, stem_width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            )
        else:
            self.stem = nn.Sequential(*_conv_bn(in_channels, stem_width, 3), nn.ReLU(inplace=True))
        stages, in_ch = [], stem_width
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(block(in_ch, width, stride))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages[0], stages[1], stages[2]
        self.layer4 = stages[3] if len(stages) > 3 else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model(input_shape=(1, 3, 224, 224))
def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18 (ImageNet layout, 11.7 M parameters)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes)


@register_model(input_shape=(1, 3, 224, 224))
def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 (ImageNet layout, bottleneck blocks, 25.6 M parameters)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_classes)


@register_model(input_shape=(1, 3, 32, 32))
def resnet56_cifar(num_classes: int = 10) -> nn.Module:
    """ResNet-56 for 32x32 CIFAR images (three stages of nine basic blocks)."""
    return ResNet(BasicBlock, [9, 9, 9], [16, 32, 64], num_classes, imagenet_stem=False)


@register_model(input_shape=(1, 1, 28, 28))
def demo(num_classes: int = 10) -> nn.Module:
    """Small ResNet for 28x28 grayscale digits; the bundled demo model (trained on MNIST-5k)."""
    return ResNet(BasicBlock, [1, 1, 1], [32, 64, 128], num_classes, in_channels=1, imagenet_stem=False)
