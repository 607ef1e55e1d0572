"""Per-group sensitivity on calibration data: the loss increase when one group alone keeps only its
best share of channels (by a criterion's scores), at a few keep ratios. Allocators use it to weigh groups
against each other, to bend each group's loss curve, and to raise the floor of sensitive groups.

>>> probe_sensitivity(model, graph, scores, calib_batch)        # doctest: +SKIP
{'stem.0': {0.5: 0.91, 0.25: 2.3}, 'layer1.0.conv1': {0.5: 0.05, 0.25: 0.4}, ...}
"""

from __future__ import annotations

import torch
from torch import nn

from toolchain.graph import PruningGraph
from toolchain.saliency._masking import batch_statistics, calibration_batches, masked, task_loss
from toolchain.threads import torch_threads

MIN_SENSITIVITY = 1e-4  # a group is never free to remove: keeps the loss curves strictly ordered


@torch.no_grad()
def probe_sensitivity(model: nn.Module, graph: PruningGraph, scores: dict[str, torch.Tensor], calib,
                      keep_ratios: tuple[float, ...] = (0.5, 0.25), batch_size: int = 64) -> dict[str, dict]:
    batches = calibration_batches(calib, batch_size, max_batches=1)
    if not batches:
        return {}
    inputs, labels = batches[0]
    was_training = model.training
    model.eval()
    try:
        with torch_threads(1), batch_statistics(model):
            reference = model(inputs)
            base = float(task_loss(reference, labels, reference))
            result = {}
            for group in graph.groups:
                score = scores[group.name].float()
                result[group.name] = {}
                for ratio in keep_ratios:
                    keep = torch.zeros(score.numel())
                    keep[torch.argsort(score, descending=True)[:max(1, round(ratio * score.numel()))]] = 1.0
                    with masked(graph, {group.name: keep}):
                        loss = float(task_loss(model(inputs), labels, reference))
                    result[group.name][ratio] = max(loss - base, MIN_SENSITIVITY)
    finally:
        model.train(was_training)
    return result


@torch.no_grad()
def masked_loss(model: nn.Module, graph: PruningGraph, scores: dict[str, torch.Tensor], widths: dict[str, int],
                calib, batch_size: int = 128) -> float:
    """Calibration loss with every group keeping its `widths[group]` best channels at once (channels masked,
    BatchNorm on batch statistics as after re-calibration): the joint proxy for a width configuration."""
    batches = calibration_batches(calib, batch_size, max_batches=1)
    inputs, labels = batches[0]
    keep = {}
    for name, width in widths.items():
        score = scores[name].float()
        mask = torch.zeros(score.numel())
        mask[torch.argsort(score, descending=True)[:width]] = 1.0
        keep[name] = mask
    was_training = model.training
    model.eval()
    try:
        with torch_threads(1), batch_statistics(model):
            reference = model(inputs)
            with masked(graph, keep):
                return float(task_loss(model(inputs), labels, reference))
    finally:
        model.train(was_training)
