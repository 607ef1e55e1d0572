"""VGG-16 with batch normalisation, CIFAR layout."""

from __future__ import annotations

from torch import nn

from toolchain.models._registry import register_model

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, config, num_classes: int):
        super().__init__()
        layers, in_ch = [], 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU(True)]
                in_ch = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(in_ch, 512), nn.ReLU(True), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model(input_shape=(1, 3, 32, 32))
def vgg16_bn_cifar(num_classes: int = 10) -> nn.Module:
    """VGG-16 with BatchNorm for 32x32 CIFAR images."""
    return VGG(_VGG16, num_classes)
