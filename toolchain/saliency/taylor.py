"""`taylor`: first-order Taylor estimate of the loss change when a channel is removed (Molchanov et al.,
CVPR 2019), accumulated over calibration batches.

Per batch the loss is back-propagated and Torch-Pruning's group Taylor importance |sum w * dL/dw| is
added up; summing per-batch scores (not gradients) keeps batches whose gradients cancel from hiding a
channel's importance.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import task_loss


@register_criterion("taylor")
def taylor(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("taylor")
    importance = tp.importance.GroupTaylorImportance(normalizer=None)
    model = context.model
    totals: dict[str, torch.Tensor] = {}
    for (inputs, labels), reference in zip(context.batches, context.references()):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            task_loss(model(inputs), labels, reference).backward()
        for name in context.group_names:
            score = importance(context.graph.tp_group(name)).detach()
            totals[name] = totals.get(name, 0) + score
    model.zero_grad(set_to_none=True)
    context.cost["batches"] = len(context.batches)
    return totals
