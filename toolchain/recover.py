"""Recovery after shrinking: BatchNorm re-calibration (cheap, always) and distillation fine-tuning.

Removing channels shifts the statistics each BatchNorm sees; re-estimating running mean and
variance on a few calibration batches recovers much of the lost accuracy with no training.
`recover` is the one place both ratio and budget pruning recover a model.

>>> done = recover(result.model, dense, load_mnist5k(), RecoveryConfig(finetune_steps=0))   # doctest: +SKIP
>>> done["accuracy_before_recovery"] <= done["accuracy"]                                     # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from toolchain.evaluate import accuracy


@dataclass(frozen=True)
class RecoveryConfig:
    """How a pruned model is recovered: BatchNorm re-calibration always, then distillation if steps > 0."""

    finetune_steps: int = 0  # distillation steps on the training split (0: low-data, no fine-tuning)


def recover(pruned: nn.Module, dense: nn.Module, data, config: RecoveryConfig = RecoveryConfig(),
            step: Callable[[str], None] = lambda _: None) -> dict:
    """Recover `pruned` in place on `data` (train/calib/test splits) and return what was done, as manifest
    fields: the dense and pruned test accuracies before and after each recovery step, and the fine-tuning
    steps taken. `accuracy` is the final one."""
    step("re-calibrating BatchNorm and evaluating")
    done = {"dense_accuracy": accuracy(dense, data.test), "accuracy_before_recovery": accuracy(pruned, data.test)}
    recalibrate_batchnorm(pruned, data.calib)
    done["accuracy"] = done["accuracy_after_bn_recalibration"] = accuracy(pruned, data.test)
    if config.finetune_steps > 0:
        step(f"fine-tuning with distillation ({config.finetune_steps} steps)")
        distill(pruned, dense, data.train, config.finetune_steps)
        done["accuracy"] = accuracy(pruned, data.test)
    done["finetune_steps"] = config.finetune_steps
    return done


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
