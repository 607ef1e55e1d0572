"""`shapley`: the Shapley value of each channel in the game "calibration loss with this coalition of the
group's channels kept" (Ancona et al., 2020), estimated by Monte Carlo permutation sampling with truncation,
sampled until each group's keep set is stable or its share of the time limit is spent.

The game is played as the network will be after pruning: BatchNorm re-estimated on each coalition's images
(`per_coalition_statistics`), and, with `shapley_in_context`, the groups scored before held at their keep
widths. Each sampled permutation removes the group's channels one by one from the full coalition; a
channel's marginal contribution is the loss increase its removal causes at that point. Once the loss is
within `shapley_truncation` (relative) of the empty coalition's, the remaining marginals are taken as zero
(truncated Monte Carlo, Ghorbani & Zou 2019). A round's permutations advance in lockstep, their next
coalitions evaluated together in one forward pass on a replicated batch (one mask per row), and the layers
the mask cannot change are replayed from one recording (`_prefix.PrefixCache`) rather than recomputed.

Rounds of `shapley_samples` permutations are drawn until the group converges: its keep set (the
`target_widths` or `probe_keep_ratio` best channels) is unchanged over `shapley_stable_rounds` successive
rounds, or every channel's 95% interval lies on its side of the keep/prune boundary. The time limit
`shapley_seconds` is shared by the groups in proportion to their widths (a group always gets one round).
The report says what it cost and how each group ended ("stable", "separated", "hit_time_limit",
"hit_permutation_cap"):

>>> config = SaliencyConfig(shapley_seconds=30)                                     # doctest: +SKIP
>>> _, report = score_groups_report(model, graph, "shapley", calib, config)        # doctest: +SKIP
>>> sorted(report)                                                                 # doctest: +SKIP
['criterion', 'evaluations', 'forward_passes', 'groups_converged', 'groups_hit_limit', 'images_forwarded',
 'per_group', 'permutations', 'seconds', 'wall_seconds']
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import masked, per_coalition_statistics, root_width, task_loss
from toolchain.saliency._prefix import PrefixCache

MAX_ROWS_PER_FORWARD = 512
Z_95 = 1.96
MIN_PERMUTATIONS_FOR_INTERVAL = 8  # fewer samples give standard errors too rough to trust a normal interval
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class _Game:
    """One group's game: the images it is played on and the losses of the full and empty coalitions."""

    context: ScoringContext
    name: str
    width: int
    inputs: torch.Tensor
    labels: torch.Tensor | None
    reference: torch.Tensor
    full_loss: float = 0.0
    empty_loss: float = 0.0
    pruned: dict[str, torch.Tensor] | None = None  # keep masks of the groups scored before this one
    prefix: PrefixCache | None = None  # layers the mask cannot change, replayed rather than recomputed

    def losses(self, masks: torch.Tensor) -> torch.Tensor:
        """Mean loss of each coalition (row of `masks`) on the images, in chunks of replicated batches."""
        batch, cost = self.inputs.shape[0], self.context.cost
        per_forward = max(1, MAX_ROWS_PER_FORWARD // batch)
        out = []
        for start in range(0, masks.shape[0], per_forward):
            chunk = masks[start:start + per_forward]
            copies = chunk.shape[0]
            replaying = self.prefix.replaying(copies) if self.prefix else nullcontext()
            masks_now = {**(self.pruned or {}), self.name: chunk.repeat_interleave(batch, dim=0)}
            with torch.no_grad(), masked(self.context.graph, masks_now), replaying:
                outputs = self.context.model(self.inputs.repeat(copies, *[1] * (self.inputs.dim() - 1)))
            labels = None if self.labels is None else self.labels.repeat(copies)
            reference = self.reference.repeat(copies, *[1] * (self.reference.dim() - 1))
            out.append(task_loss(outputs, labels, reference, reduction="none").view(copies, batch).mean(dim=1))
            cost["evaluations"] = cost.get("evaluations", 0) + copies
            cost["images_forwarded"] = cost.get("images_forwarded", 0) + copies * batch
            cost["forward_passes"] = cost.get("forward_passes", 0) + 1
        return torch.cat(out)


def _new_game(context: ScoringContext, name: str, pruned: dict[str, torch.Tensor] | None = None) -> _Game:
    size = context.config.shapley_batch
    inputs, labels = context.batches[0]
    game = _Game(context, name, root_width(context.graph, name), inputs[:size],
                 None if labels is None else labels[:size], context.references()[0][:size], pruned=pruned)
    probes = torch.stack([torch.ones(game.width), torch.zeros(game.width),
                          (torch.arange(game.width) % 2).float()])
    direct = game.losses(probes)
    game.full_loss, game.empty_loss = float(direct[0]), float(direct[1])
    game.prefix = PrefixCache.record(context.model, context.graph, name, game.inputs, pruned)
    # The replay is used only where it reproduces the direct losses (the graph's habit: check every shortcut).
    if not game.prefix.replays or not torch.allclose(game.losses(probes), direct, rtol=1e-4, atol=1e-6):
        game.prefix = None
    return game


def permutation_round(game: _Game, orders: torch.Tensor, truncation: float) -> torch.Tensor:
    """Marginal contributions (permutations, width) of removing channels in each row of `orders`.

    The permutations advance together: each forward pass takes the next few coalitions of every permutation
    still running; a permutation stops once its loss is within `truncation` of the empty coalition's.
    """
    count, width = orders.shape
    tolerance = truncation * abs(game.empty_loss - game.full_loss)
    per_forward = max(1, MAX_ROWS_PER_FORWARD // game.inputs.shape[0])
    keep = torch.ones(count, width)
    removed = [0] * count
    previous = [game.full_loss] * count
    marginals = torch.zeros(count, width)
    running = list(range(count))
    while running:
        step = max(1, per_forward // len(running))
        masks, owners = [], []
        for p in running:
            for _ in range(min(step, width - removed[p])):
                keep[p, orders[p, removed[p]]] = 0.0
                masks.append(keep[p].clone())
                owners.append((p, int(orders[p, removed[p]])))
                removed[p] += 1
        losses = game.losses(torch.stack(masks)).tolist()
        for (p, channel), loss in zip(owners, losses):
            marginals[p, channel] = loss - previous[p]
            previous[p] = loss
        running = [p for p in running
                   if removed[p] < width and abs(previous[p] - game.empty_loss) > tolerance]
    return marginals


def _keep_set(values: torch.Tensor, keep: int) -> frozenset[int]:
    return frozenset(torch.argsort(values, descending=True, stable=True)[:keep].tolist())


def boundary_separated(mean: torch.Tensor, stderr: torch.Tensor, keep: int) -> bool:
    """Whether every channel's 95% interval lies on its own side of the keep/prune boundary.

    >>> boundary_separated(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.1, 0.1, 0.1]), keep=1)
    True
    >>> boundary_separated(torch.tensor([3.0, 1.0, 2.9]), torch.tensor([0.1, 0.1, 0.1]), keep=1)
    False
    """
    if keep >= mean.numel():
        return True
    order = torch.argsort(mean, descending=True, stable=True)
    kept, dropped = order[:keep], order[keep:]
    return bool((mean[kept] - Z_95 * stderr[kept]).min() > (mean[dropped] + Z_95 * stderr[dropped]).max())


def group_shapley(game: _Game, keep: int, seconds: float, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Rounds of permutations until the keep set of `keep` channels is stable or `seconds` are spent."""
    config = game.context.config
    clock = CLOCKS[config.shapley_clock]
    start = clock()
    rows: list[torch.Tensor] = []
    keep_sets: list[frozenset[int]] = []
    status = "hit_permutation_cap"
    while len(rows) * config.shapley_samples < config.shapley_max_permutations:
        orders = torch.stack([torch.randperm(game.width, generator=generator) for _ in range(config.shapley_samples)])
        rows.append(permutation_round(game, orders, config.shapley_truncation))
        marginals = torch.cat(rows)
        mean = marginals.mean(dim=0)
        samples = marginals.shape[0]
        stderr = marginals.std(dim=0) / samples ** 0.5 if samples >= MIN_PERMUTATIONS_FOR_INTERVAL else None
        keep_sets.append(_keep_set(mean, keep))
        recent = keep_sets[-(config.shapley_stable_rounds + 1):]
        if len(recent) == config.shapley_stable_rounds + 1 and len(set(recent)) == 1:
            status = "stable"
            break
        if stderr is not None and boundary_separated(mean, stderr, keep):
            status = "separated"
            break
        if clock() - start >= seconds:
            status = "hit_time_limit"
            break
    marginals = torch.cat(rows)
    return marginals.mean(dim=0), {"permutations": marginals.shape[0], "status": status,
                                   "seconds": round(clock() - start, 3)}


def _keep_width(context: ScoringContext, name: str, width: int) -> int:
    wanted = context.config.target_widths.get(name)
    return int(wanted) if wanted else max(1, round(context.config.probe_keep_ratio * width))


def _score_in_turn(context: ScoringContext, clock, start: float) -> tuple[dict, dict]:
    """Each group's Shapley values in turn; with `shapley_in_context`, the groups already scored are held at
    their keep widths, so a group is judged in the pruned network it will live in."""
    config = context.config
    generator = torch.Generator().manual_seed(config.seed)
    widths = {g.name: g.width for g in context.graph.groups}
    remaining_width = sum(widths.values())
    scores, per_group, pruned = {}, {}, {}
    for name in context.group_names:
        # The groups still to score share what is left of the limit in proportion to their widths.
        share = max(0.0, config.shapley_seconds - (clock() - start)) * widths[name] / remaining_width
        game = _new_game(context, name, pruned if config.shapley_in_context else None)
        keep = _keep_width(context, name, game.width)
        scores[name], per_group[name] = group_shapley(game, keep, share, generator)
        pruned[name] = torch.zeros(game.width)
        pruned[name][torch.argsort(scores[name], descending=True, stable=True)[:keep]] = 1.0
        remaining_width -= widths[name]
    return scores, per_group


@register_criterion("shapley")
def shapley(context: ScoringContext) -> dict[str, torch.Tensor]:
    context.require_data("shapley")
    config = context.config
    clock = CLOCKS[config.shapley_clock]
    start = clock()
    # BatchNorm re-estimated per coalition, as it will be after pruning (running statistics would score
    # how a removal shifts the next layer's inputs, which re-calibration undoes, not what the channel carries).
    rows = min(config.shapley_batch, context.batches[0][0].shape[0])
    with per_coalition_statistics(context.model, rows):
        scores, per_group = _score_in_turn(context, clock, start)
    statuses = [g["status"] for g in per_group.values()]
    context.cost.update({
        "permutations": sum(g["permutations"] for g in per_group.values()),
        "groups_converged": sum(s in ("stable", "separated") for s in statuses),
        "groups_hit_limit": sum(s.startswith("hit_") for s in statuses),
        f"{config.shapley_clock}_seconds": round(clock() - start, 3),
        "per_group": per_group,
    })
    return scores
