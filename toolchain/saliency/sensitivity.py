"""`sensitivity`: data-informed, sampling-based filter sensitivity (Liebenwein et al., "Provable filter
pruning", ICLR 2020): a channel's score is its largest relative contribution to any unit of the next layer
over a small batch, max_x max_i |W_ic a_c(x)| / sum_j |W_ij a_j(x)|.
"""

from __future__ import annotations

import torch
from torch import nn

from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import Consumer, captured_inputs, consumers, root_width

MAX_IMAGES = 16


def _relative_contributions(consumer: Consumer, x: torch.Tensor) -> torch.Tensor:
    """max over samples and output units of each read channel's share of |W| |a| at the consumer."""
    module = consumer.module
    weight = module.weight.detach().abs()
    x = x.detach().abs()
    if isinstance(module, nn.Linear):
        x = x.reshape(-1, x.shape[-1])  # (samples, in)
        total = x @ weight.T + 1e-12  # (samples, out)
        share = x[:, None, :] * weight[None, :, :] / total[:, :, None]  # (samples, out, in)
        return share.amax(dim=(0, 1))[consumer.channels]
    groups = module.groups
    out_per_group = weight.shape[0] // groups
    kwargs = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}
    total = nn.functional.conv2d(x, weight, groups=groups, **kwargs) + 1e-12
    shares = torch.zeros(x.shape[1])
    in_per_group = weight.shape[1]
    for c in consumer.channels.tolist():
        g = c // in_per_group
        rows = weight[g * out_per_group:(g + 1) * out_per_group, c - g * in_per_group: c - g * in_per_group + 1]
        part = nn.functional.conv2d(x[:, c:c + 1], rows, **kwargs)
        shares[c] = (part / total[:, g * out_per_group:(g + 1) * out_per_group]).max()
    return shares[consumer.channels]


@register_criterion("sensitivity")
def sensitivity(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("sensitivity")
    inputs = context.batches[0][0][:MAX_IMAGES]
    found = {name: consumers(context.graph, name) for name in context.group_names}
    flat = [c for group in found.values() for c in group]
    with torch.no_grad(), captured_inputs([c.module for c in flat]) as store:
        context.model(inputs)
    reads = {id(c): store[i][0] for i, c in enumerate(flat)}
    scores = {}
    for name, group_consumers in found.items():
        score = torch.zeros(root_width(context.graph, name))
        for consumer in group_consumers:
            share = _relative_contributions(consumer, reads[id(consumer)])
            score[consumer.roots] = torch.maximum(score[consumer.roots], share)
        scores[name] = score
    context.cost["images"] = int(inputs.shape[0])
    return scores
