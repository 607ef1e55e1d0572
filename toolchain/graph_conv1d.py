"""Torch-Pruning taught transformers' `Conv1D` (GPT-2's projections: a Linear whose weight is [in, out]).

Torch-Pruning neither traces `Conv1D` as a layer nor scores it, so GPT-2 had no prunable group.
Registered as a customized layer, its channels are followed like a Linear's and cut on the right
weight dim; `nf` (the width its forward reshapes to) follows the weight.

>>> DependencyGraph().build_dependency(model, x, customized_pruners=customized_pruners())  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn


def conv1d_type() -> type | None:
    """transformers' `Conv1D` (GPT-2 style projections: weight stored as [in, out]) when transformers has been
    imported, else None. A model holding one has imported it already, so models without one (and every CLI call)
    do not pay transformers' import, 0.3 s."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_conv1d(layer) -> bool:
    kind = conv1d_type()
    return kind is not None and isinstance(layer, kind)


class Conv1DPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning surgery for transformers' `Conv1D` (a Linear whose weight is [in, out])."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[1])) - set(int(i) for i in idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.nf = len(keep)  # forward() reshapes its output to nf channels
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - set(int(i) for i in idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]


def customized_pruners() -> dict:
    """Layer types Torch-Pruning does not know, with their surgery (for `build_dependency`)."""
    kind = conv1d_type()
    return {kind: Conv1DPruner()} if kind is not None else {}


def root_layer_types() -> tuple[type, ...]:
    """Layer types whose output channels start a group (Torch-Pruning's conv/linear, plus Conv1D)."""
    return (nn.modules.conv._ConvNd, nn.Linear, *customized_pruners())


def is_projection(layer) -> bool:
    """A Linear or a Conv1D: a layer that projects the last dim."""
    return isinstance(layer, nn.Linear) or is_conv1d(layer)


def conv1d_magnitude(group, width: int) -> torch.Tensor:
    """L2 magnitude per root channel over a group's `Conv1D` layers (Torch-Pruning's importance skips them)."""
    return conv1d_norms(group, width, 2).sqrt()


def conv1d_norms(group, width: int, p: int) -> torch.Tensor:
    """Per root channel, the sum of |w|^p over its rows in the group's `Conv1D` layers (zeros without any)."""
    score = torch.zeros(width)
    for item in group:
        layer, handler = item.dep.target.module, item.dep.handler
        if not is_conv1d(layer):
            continue
        weight = layer.weight.detach()  # [in, out]
        pruner = Conv1DPruner()
        rows = weight.T if getattr(handler, "__name__", "") == pruner.prune_out_channels.__name__ else weight
        score.index_add_(0, torch.tensor(item.root_idxs), rows[list(item.idxs)].abs().pow(p).sum(dim=1))
    return score
