"""DenseNet-121: every layer's output is concatenated onto the block's running feature map."""

from __future__ import annotations

import torch
from torch import nn

from toolchain.models._registry import register_model


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bottleneck: int = 4):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, bottleneck * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        new = self.conv1(self.relu(self.norm1(x)))
        new = self.conv2(self.relu(self.norm2(new)))
        return torch.cat([x, new], dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.BatchNorm2d(in_ch), nn.ReLU(), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, block_config=(6, 12, 24, 16), growth: int = 32, stem: int = 64, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        ]
        ch = stem
        for i, n_layers in enumerate(block_config):
            for _ in range(n_layers):
                layers.append(DenseLayer(ch, growth))
                ch += growth
            if i != len(block_config) - 1:
                layers.append(Transition(ch, ch // 2))
                ch //= 2
        layers += [nn.BatchNorm2d(ch), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model(input_shape=(1, 3, 224, 224))
def densenet121(num_classes: int = 1000) -> nn.Module:
    """DenseNet-121 (growth 32, blocks 6/12/24/16, 8.0 M parameters)."""
    return DenseNet(num_classes=num_classes)
