"""Data-free criteria: filter magnitude (`l1`, `l2`), BatchNorm scale (`bn_scale`) and `random`.

Torch-Pruning's importance classes are exactly these criteria, so they are used as they are, without
its per-group normalisation (allocators compare groups through their own calibration).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import root_width


def _score_all(context: ScoringContext, importance) -> dict[str, torch.Tensor]:
    return {name: importance(context.graph.tp_group(name)).detach() for name in context.group_names}


@register_criterion("l1")
def l1(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Sum over the group's layers of each channel's L1 filter norm."""
    return _score_all(context, tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))


@register_criterion("l2")
def l2(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Mean over the group's layers of each channel's squared L2 filter norm."""
    return _score_all(context, tp.importance.GroupMagnitudeImportance(p=2, normalizer=None))


@register_criterion("bn_scale")
def bn_scale(context: ScoringContext) -> dict[str, torch.Tensor]:
    """|gamma| of the group's BatchNorm layers (network slimming); L1 magnitude for a group with none."""
    bn_importance = tp.importance.BNScaleImportance(normalizer=None)
    fallback = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
    scores = {}
    for name in context.group_names:
        group = context.graph.tp_group(name)
        has_bn = any(isinstance(dep.target.module, nn.modules.batchnorm._BatchNorm) for dep, _ in group)
        scores[name] = (bn_importance if has_bn else fallback)(group).detach()
    return scores


@register_criterion("random")
def random(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Uniform random scores (seeded): the control every criterion must beat."""
    generator = torch.Generator().manual_seed(context.config.seed)
    return {name: torch.rand(root_width(context.graph, name), generator=generator) for name in context.group_names}
