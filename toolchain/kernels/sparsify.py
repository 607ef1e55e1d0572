"""Drop-in module swap: replace eligible ``Linear`` / ``Conv2d`` layers by sparse modules.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> replaced = sparsify_(model, SparsifyConfig(pattern="2:4"))
    >>> replaced
    ['0', '2']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.kernels.modules import SparseConv2d, SparseLinear, conv_is_supported
from toolchain.kernels.patterns import Pattern, project


@dataclass(frozen=True)
class SparsifyConfig:
    """What ``sparsify_`` does.

    pattern: ``"2:4"``, ``"N:M"``, ``"block4x4"``, ``"stripe"``, ``"unify4x4"``.
    sparsity: share of zero blocks/stripes (block, stripe, unify); ``None``: 0.5. Ignored by N:M.
    prune: project the weights onto the pattern by magnitude first; ``False`` expects weights
        that already follow it (for example after ``toolchain.kernels.admm``) and fails otherwise.
    min_features: layers with fewer input or output features (channels) stay dense.
    """

    pattern: str = "2:4"
    sparsity: float | None = None
    prune: bool = True
    min_features: int = 8

    def parsed(self) -> Pattern:
        return Pattern.parse(self.pattern)


def is_eligible(module: nn.Module, config: SparsifyConfig) -> bool:
    """Whether ``module`` can be swapped under ``config`` (the stripe pattern needs a conv)."""
    pattern = config.parsed()
    if isinstance(module, nn.Linear):
        small = min(module.in_features, module.out_features) < config.min_features
        return pattern.kind != "stripe" and not small
    if isinstance(module, nn.Conv2d) and conv_is_supported(module):
        return min(module.in_channels, module.out_channels) >= config.min_features
    return False


def eligible_layers(model: nn.Module, config: SparsifyConfig,
                    filter_fn: Callable[[nn.Module, str], bool] | None = None) -> list[str]:
    """Qualified names of the layers ``sparsify_`` would replace."""
    return [name for name, module in model.named_modules()
            if is_eligible(module, config) and (filter_fn is None or filter_fn(module, name))]


@torch.no_grad()
def apply_pattern_(model: nn.Module, config: SparsifyConfig,
                   filter_fn: Callable[[nn.Module, str], bool] | None = None) -> list[str]:
    """Projects the weights of the eligible layers onto the pattern in place (the masked
    dense model that the sparse one must reproduce); returns their names."""
    pattern = config.parsed()
    names = eligible_layers(model, config, filter_fn)
    modules = dict(model.named_modules())
    for name in names:
        weight = modules[name].weight
        weight.copy_(project(weight, pattern, config.sparsity))
    return names


@torch.no_grad()
def sparsify_(model: nn.Module, config: SparsifyConfig,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> list[str]:
    """Replaces eligible layers of ``model`` in place by ``SparseLinear`` / ``SparseConv2d``.

    ``filter_fn(module, qualified_name)`` can exclude layers (for example the classifier).
    Returns the qualified names of the replaced layers.
    """
    pattern = config.parsed()
    if config.sparsity is not None and not 0.0 <= config.sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {config.sparsity}")
    if config.prune:
        apply_pattern_(model, config, filter_fn)
    names = eligible_layers(model, config, filter_fn)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dense = getattr(parent, child_name)
        try:
            if isinstance(dense, nn.Linear):
                sparse = SparseLinear.from_dense(dense, pattern)
            else:
                sparse = SparseConv2d.from_dense(dense, pattern)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None
        setattr(parent, child_name, sparse.to(dense.weight.device))
    return names
