"""Data-free criteria: filter magnitude (`l1`, `l2`), BatchNorm scale (`bn_scale`) and `random`.

Torch-Pruning's importance classes are exactly these criteria, so they are used as they are, without
its per-group normalisation (allocators compare groups through their own calibration).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from toolchain.graph_conv1d import conv1d_norms, is_conv1d
from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import root_width


def _with_conv1d(group, importance, p: int, width: int) -> torch.Tensor:
    """Torch-Pruning's group importance plus the `Conv1D` layers it does not see (GPT-2), on the same scale:
    a group of only `Conv1D` layers (for which it returns None) is scored by them alone."""
    score = importance(group)
    if not any(is_conv1d(dep.target.module) for dep, _ in group):
        return score.detach()
    extra = conv1d_norms(group, width, p)
    return extra if score is None else score.detach() + extra


def _score_all(context: ScoringContext, importance, p: int) -> dict[str, torch.Tensor]:
    return {name: _with_conv1d(context.graph.tp_group(name), importance, p, root_width(context.graph, name))
            for name in context.group_names}


@register_criterion("l1")
def l1(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Sum over the group's layers of each channel's L1 filter norm."""
    return _score_all(context, tp.importance.GroupMagnitudeImportance(p=1, normalizer=None), p=1)


@register_criterion("l2")
def l2(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Mean over the group's layers of each channel's squared L2 filter norm."""
    return _score_all(context, tp.importance.GroupMagnitudeImportance(p=2, normalizer=None), p=2)


@register_criterion("bn_scale")
def bn_scale(context: ScoringContext) -> dict[str, torch.Tensor]:
    """|gamma| of the group's BatchNorm layers (network slimming); L1 magnitude for a group with none."""
    bn_importance = tp.importance.BNScaleImportance(normalizer=None)
    fallback = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
    scores = {}
    for name in context.group_names:
        group = context.graph.tp_group(name)
        has_bn = any(isinstance(dep.target.module, nn.modules.batchnorm._BatchNorm) for dep, _ in group)
        scores[name] = (bn_importance(group).detach() if has_bn
                        else _with_conv1d(group, fallback, 1, root_width(context.graph, name)))
    return scores


@register_criterion("random")
def random(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Uniform random scores (seeded): the control every criterion must beat."""
    generator = torch.Generator().manual_seed(context.config.seed)
    return {name: torch.rand(root_width(context.graph, name), generator=generator) for name in context.group_names}
