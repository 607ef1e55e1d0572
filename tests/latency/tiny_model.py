"""A tiny residual CNN for campaign tests (model spec `tiny_model.py:factory`, input shape 1,3,16,16)."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x)) + x
        return self.head(x.mean(dim=(2, 3)))


def factory():
    return TinyNet().eval()
