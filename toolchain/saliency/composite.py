"""`composite`: several primitive criteria made comparable (ranks) and, per group, the one whose choice of
channels costs least calibration loss at the width the group is pruned to.

Each single criterion makes poor choices somewhere (magnitude ignores data, Taylor is local, redundancy
ignores scale); judging them where the choice is actually made avoids each one's worst picks. The
candidates are the components and their mean rank. Finally the combined choice is held against every
candidate applied to all groups, and the best joint one is returned, so on calibration data the composite
is never worse than its best component.
"""

from __future__ import annotations

import torch

from toolchain.errors import ToolchainError
from toolchain.saliency import ScoringContext, get_criterion, register_criterion, to_ranks
from toolchain.saliency._masking import batch_statistics, masked, task_loss

MEAN_RANK = "mean_rank"


def _keep_mask(ranks: torch.Tensor, width: int) -> torch.Tensor:
    mask = torch.zeros_like(ranks)
    mask[torch.argsort(ranks, descending=True)[:width]] = 1.0
    return mask


def _loss(context: ScoringContext, masks: dict[str, torch.Tensor], batches: int) -> float:
    total = 0.0
    with torch.no_grad(), batch_statistics(context.model), masked(context.graph, masks):
        for (inputs, labels), reference in list(zip(context.batches, context.references()))[:batches]:
            total += float(task_loss(context.model(inputs), labels, reference))
    context.cost["evaluations"] = context.cost.get("evaluations", 0) + 1
    return total / max(min(batches, len(context.batches)), 1)


def composite_choice(context: ScoringContext, ranks: dict[str, dict[str, torch.Tensor]],
                     widths: dict[str, int]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Per group the candidate with least loss when that group alone keeps `widths[group]` channels, then
    the joint check against each candidate applied everywhere. Returns scores and the choice per group."""
    choice: dict[str, str] = {}
    for name in context.group_names:
        losses = {candidate: _loss(context, {name: _keep_mask(by_group[name], widths[name])}, batches=1)
                  for candidate, by_group in ranks.items()}
        choice[name] = min(losses, key=losses.get)
    every_batch = len(context.batches)
    joint = {name: _keep_mask(ranks[choice[name]][name], widths[name]) for name in context.group_names}
    best_loss = _loss(context, joint, every_batch)
    for candidate, by_group in ranks.items():
        loss = _loss(context, {n: _keep_mask(by_group[n], widths[n]) for n in context.group_names}, every_batch)
        if loss < best_loss:
            best_loss, choice = loss, dict.fromkeys(context.group_names, candidate)
    context.cost["calibration_loss"] = round(best_loss, 6)
    return {name: ranks[choice[name]][name] for name in context.group_names}, choice


@register_criterion("composite")
def composite(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("composite")
    components = [c for c in context.config.composite_of if c != "composite"]
    if not components:
        raise ToolchainError("composite needs at least one component criterion (composite_of)")
    ranks: dict[str, dict[str, torch.Tensor]] = {}
    for component in components:
        component_cost: dict = {}
        sub_context = ScoringContext(context.model, context.graph, context.batches, context.config, component_cost,
                                     context.references())
        ranks[component] = {n: to_ranks(s) for n, s in get_criterion(component)(sub_context).items()}
        context.cost[f"{component}_cost"] = component_cost
    if len(components) > 1:
        ranks[MEAN_RANK] = {n: torch.stack([ranks[c][n] for c in components]).mean(0) for n in context.group_names}
    widths = {}
    for group in context.graph.groups:
        wanted = context.config.target_widths.get(group.name)
        widths[group.name] = int(wanted) if wanted else max(1, round(context.config.probe_keep_ratio * group.width))
    scores, choice = composite_choice(context, ranks, widths)
    context.cost["choices"] = choice
    return scores
