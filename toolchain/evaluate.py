"""Accuracy and mean loss of a classifier on a dataset."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from toolchain.errors import ToolchainError


@torch.no_grad()
@torch.no_grad()
def mean_loss(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Mean cross-entropy of `model` (eval mode) on (input, label) pairs.

    >>> mean_loss(nn.Linear(2, 2).eval(), [(torch.zeros(2), 0), (torch.zeros(2), 1)]) > 0
    True
    """
    was_training = model.training
    model.eval()
    total = count = 0.0
    try:
        for inputs, labels in DataLoader(dataset, batch_size=batch_size):
            total += float(nn.functional.cross_entropy(model(inputs), labels, reduction="sum"))
            count += len(labels)
    finally:
        model.train(was_training)
    if not count:
        raise ToolchainError("cannot compute a loss on an empty dataset")
    return total / count


def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1] of `model` (eval mode) on (input, label) pairs.

    Refuses an empty dataset and outputs with NaN or inf: either would give a number ("0.00%") that means
    nothing (argmax of NaN logits is index 0 for every input).
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for inputs, labels in DataLoader(dataset, batch_size=batch_size):
            outputs = model(inputs)
            if not bool(torch.isfinite(outputs).all()):
                raise ToolchainError("the model's outputs on the evaluation data are NaN or infinite "
                                     "(NaN inputs, or BatchNorm statistics computed from them?); accuracy is undefined")
            correct += int((outputs.argmax(dim=1) == labels).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise ToolchainError("the evaluation data is empty; accuracy is undefined")
    return correct / total
