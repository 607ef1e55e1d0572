"""Accuracy of a classifier on a dataset."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1] of `model` (eval mode) on (input, label) pairs."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, labels in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(inputs).argmax(dim=1) == labels).sum())
        total += len(labels)
    model.train(was_training)
    return correct / max(total, 1)
