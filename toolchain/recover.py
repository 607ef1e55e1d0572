"""Recovery after shrinking: BatchNorm re-calibration (cheap, always) and distillation fine-tuning.

Removing channels shifts the statistics each BatchNorm sees; re-estimating running mean and
variance on a few calibration batches recovers much of the lost accuracy with no training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batch_size: int = 100, max_batches: int = 10) -> int:
    """Re-estimate BatchNorm running statistics on `dataset`; returns the number of BN layers reset."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i, (inputs, _) in enumerate(DataLoader(dataset, batch_size=batch_size)):
        if i >= max_batches:
            break
        model(inputs)
    for norm in norms:
        norm.momentum = 0.1
    model.train(was_training)
    return len(norms)


def distill(student: nn.Module, teacher: nn.Module, dataset: Dataset, steps: int, lr: float = 1e-3,
            temperature: float = 4.0, batch_size: int = 64, seed: int = 0) -> None:
    """Fine-tune `student` for `steps` batches on the dense `teacher`'s softened outputs plus labels."""
    if steps <= 0:
        return
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    teacher.eval()
    student.train()
    done = 0
    while done < steps:
        for inputs, labels in loader:
            with torch.no_grad():
                soft_targets = (teacher(inputs) / temperature).softmax(dim=1)
            logits = student(inputs)
            kd = nn.functional.kl_div((logits / temperature).log_softmax(dim=1), soft_targets,
                                      reduction="batchmean") * temperature**2
            loss = kd + nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
    student.eval()
