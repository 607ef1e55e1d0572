"""`composite`: several primitive criteria made comparable (ranks) and, per group, the one whose choice of
channels costs least calibration loss at the width the group is pruned to, judged on held-apart data.

Each single criterion makes poor choices somewhere (magnitude ignores data, Taylor is local, redundancy
ignores scale); judging them where the choice is actually made avoids each one's worst picks. The
calibration images are split in two (seeded): the per-group choice among the components and their mean
rank is fitted on one half, and the other half judges it against every candidate applied to all groups.
A combination (the per-group choice or the mean rank) is returned only when it is strictly better there
than the best component; otherwise the best component is, so on the held-apart half the composite is never
worse than its best component, and the choice made on the fitting half cannot flatter itself.

>>> _, report = score_groups_report(model, graph, "composite", calib, SaliencyConfig())     # doctest: +SKIP
>>> report["chosen"], report["fell_back"]                                                  # doctest: +SKIP
('per_group', False)
"""

from __future__ import annotations

import torch

from toolchain.errors import ToolchainError
from toolchain.saliency import ScoringContext, get_criterion, register_criterion, to_ranks
from toolchain.saliency._masking import batch_statistics, masked, task_loss

MEAN_RANK = "mean_rank"
PER_GROUP = "per_group"
Split = list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]  # (inputs, labels, dense outputs)


def _keep_mask(ranks: torch.Tensor, width: int) -> torch.Tensor:
    mask = torch.zeros_like(ranks)
    mask[torch.argsort(ranks, descending=True)[:width]] = 1.0
    return mask


def split_calibration(context: ScoringContext, batch_size: int) -> tuple[Split, Split]:
    """The calibration images (with their dense outputs) split in two seeded halves: (fit, judge)."""
    inputs = torch.cat([x for x, _ in context.batches])
    references = torch.cat(context.references())
    has_labels = all(y is not None for _, y in context.batches)
    labels = torch.cat([y for _, y in context.batches]) if has_labels else None
    if inputs.shape[0] < 2:
        raise ToolchainError("composite needs at least 2 calibration images: one half fits its choice, "
                             "the other judges it")
    order = torch.randperm(inputs.shape[0], generator=torch.Generator().manual_seed(context.config.seed))
    halves = order[: (inputs.shape[0] + 1) // 2], order[(inputs.shape[0] + 1) // 2:]

    def batches(index: torch.Tensor) -> Split:
        return [(inputs[part], None if labels is None else labels[part], references[part])
                for part in index.split(batch_size)]

    return batches(halves[0]), batches(halves[1])


def _loss(context: ScoringContext, masks: dict[str, torch.Tensor], split: Split) -> float:
    """Mean task loss on `split` with the masked channels removed (BatchNorm on batch statistics)."""
    total = count = 0.0
    with torch.no_grad(), batch_statistics(context.model), masked(context.graph, masks):
        for inputs, labels, reference in split:
            total += float(task_loss(context.model(inputs), labels, reference)) * inputs.shape[0]
            count += inputs.shape[0]
    context.cost["evaluations"] = context.cost.get("evaluations", 0) + 1
    return total / count


def _everywhere(context: ScoringContext, by_group: dict[str, torch.Tensor], widths: dict[str, int]):
    return {n: _keep_mask(by_group[n], widths[n]) for n in context.group_names}


def composite_choice(context: ScoringContext, ranks: dict[str, dict[str, torch.Tensor]], components: list[str],
                     widths: dict[str, int]) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """Fit the per-group choice on one half, judge every candidate on the other; returns the scores, the
    candidate chosen (a component, `mean_rank` or `per_group`) and the per-group choice that was fitted."""
    fit, judge = split_calibration(context, context.config.batch_size)
    per_group: dict[str, str] = {}
    for name in context.group_names:
        losses = {candidate: _loss(context, {name: _keep_mask(by_group[name], widths[name])}, fit)
                  for candidate, by_group in ranks.items()}
        per_group[name] = min(losses, key=losses.get)
    candidates = {**ranks, PER_GROUP: {n: ranks[per_group[n]][n] for n in context.group_names}}
    judged = {candidate: _loss(context, _everywhere(context, by_group, widths), judge)
              for candidate, by_group in candidates.items()}
    best_component = min(components, key=lambda c: judged[c])  # ties: the first listed
    chosen = best_component
    for combination in (PER_GROUP, MEAN_RANK):
        if combination in judged and judged[combination] < judged[chosen]:
            chosen = combination
    context.cost.update({"fit_images": sum(x.shape[0] for x, _, _ in fit),
                         "judge_images": sum(x.shape[0] for x, _, _ in judge),
                         "judge_losses": {c: round(v, 6) for c, v in judged.items()},
                         "chosen": chosen, "fell_back": chosen == best_component,
                         "calibration_loss": round(judged[chosen], 6)})
    return candidates[chosen], chosen, per_group


@register_criterion("composite")
def composite(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("composite")
    components = list(dict.fromkeys(c for c in context.config.composite_of if c != "composite"))
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
    scores, _chosen, per_group = composite_choice(context, ranks, components, widths)
    context.cost["choices"] = per_group
    return scores
