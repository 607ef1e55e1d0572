"""`shapley`: the Shapley value of each channel in the game "calibration loss with this coalition of the
group's channels kept" (Ancona et al., 2020), estimated by Monte Carlo permutation sampling with truncation.

Each sampled permutation removes the group's channels one by one from the full coalition; a channel's
marginal contribution is the loss increase its removal causes at that point. Once the coalition's loss is
within `shapley_truncation` (relative) of the empty coalition's, the remaining marginals are taken as zero
(truncated Monte Carlo, Ghorbani & Zou 2019). The coalitions of one permutation are evaluated in a few
forward passes on a replicated batch (one mask per row). Cost, bounded by `shapley_samples`, is
reported as coalition evaluations and images forwarded.
"""

from __future__ import annotations

import torch

from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import masked, root_width, task_loss

MAX_ROWS_PER_FORWARD = 512


def _coalition_losses(context: ScoringContext, name: str, masks: torch.Tensor, inputs, labels, reference):
    """Mean loss of each coalition (row of `masks`) on the batch, in chunks of replicated batches."""
    batch = inputs.shape[0]
    per_forward = max(1, MAX_ROWS_PER_FORWARD // batch)
    losses = []
    for start in range(0, masks.shape[0], per_forward):
        chunk = masks[start:start + per_forward]
        rows = chunk.repeat_interleave(batch, dim=0)
        with torch.no_grad(), masked(context.graph, {name: rows}):
            outputs = context.model(inputs.repeat(chunk.shape[0], *[1] * (inputs.dim() - 1)))
        repeated_labels = None if labels is None else labels.repeat(chunk.shape[0])
        per_row = task_loss(outputs, repeated_labels, reference.repeat(chunk.shape[0], *[1] * (reference.dim() - 1)),
                            reduction="none")
        losses.append(per_row.view(chunk.shape[0], batch).mean(dim=1))
        context.cost["evaluations"] = context.cost.get("evaluations", 0) + chunk.shape[0]
        context.cost["images_forwarded"] = context.cost.get("images_forwarded", 0) + rows.shape[0]
    return torch.cat(losses)


def group_shapley(context: ScoringContext, name: str, generator: torch.Generator) -> torch.Tensor:
    config = context.config
    inputs, labels = context.batches[0]
    reference = context.references()[0]
    inputs, reference = inputs[:config.shapley_batch], reference[:config.shapley_batch]
    labels = None if labels is None else labels[:config.shapley_batch]
    width = root_width(context.graph, name)
    ends = _coalition_losses(context, name, torch.stack([torch.ones(width), torch.zeros(width)]),
                             inputs, labels, reference)
    full_loss, empty_loss = float(ends[0]), float(ends[1])
    tolerance = config.shapley_truncation * abs(empty_loss - full_loss)
    step = max(1, MAX_ROWS_PER_FORWARD // inputs.shape[0])
    values = torch.zeros(width)
    for _ in range(config.shapley_samples):
        order = torch.randperm(width, generator=generator)
        previous, removed = full_loss, 0
        keep = torch.ones(width)
        while removed < width:
            count = min(step, width - removed)
            masks = []
            for k in range(count):
                keep[order[removed + k]] = 0.0
                masks.append(keep.clone())
            losses = _coalition_losses(context, name, torch.stack(masks), inputs, labels, reference)
            for k in range(count):
                values[order[removed + k]] += float(losses[k]) - previous
                previous = float(losses[k])
            removed += count
            if abs(previous - empty_loss) <= tolerance:
                break  # truncation: the rest of this permutation's marginals are ~0
        context.cost["permutations"] = context.cost.get("permutations", 0) + 1
    return values / config.shapley_samples


@register_criterion("shapley")
def shapley(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("shapley")
    generator = torch.Generator().manual_seed(context.config.seed)
    return {name: group_shapley(context, name, generator) for name in context.group_names}
