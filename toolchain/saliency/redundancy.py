"""`redundancy`: functional redundancy. Channels whose activations (with data) or filters (without)
duplicate other channels' are pruned first, so a network can be pruned without retraining.

Channels are eliminated greedily: at each step the channel most correlated with a channel still kept goes
(ties: the weaker one); its score is its elimination step, so the last survivors score highest. A channel
that never varies (dead or constant) carries nothing a bias could not, and goes first.
"""

from __future__ import annotations

import torch

from toolchain.graph_conv1d import is_conv1d
from toolchain.saliency import ScoringContext, register_criterion
from toolchain.saliency._masking import captured_inputs, consumers, root_width

MAX_POSITIONS = 4096  # activation samples per channel used for the correlations


def _activation_features(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Per group, (channels, samples) activations as its first consumer reads them, in root order."""
    first = {name: consumers(context.graph, name)[0] for name in context.group_names}
    modules = list(first.values())
    with torch.no_grad(), captured_inputs([c.module for c in modules]) as store:
        for inputs, _ in context.batches[:2]:
            context.model(inputs)
    generator = torch.Generator().manual_seed(context.config.seed)
    features = {}
    for i, (name, consumer) in enumerate(first.items()):
        xs = [x.movedim(consumer.channel_dim, -1) if consumer.channel_dim != -1 else x for x in store[i]]
        rows = torch.cat([x.reshape(-1, x.shape[-1])[:, consumer.channels] for x in xs])
        if rows.shape[0] > MAX_POSITIONS:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:MAX_POSITIONS]]
        out = torch.zeros(root_width(context.graph, name), rows.shape[0])
        out[consumer.roots] = rows.T
        features[name] = out
    return features


def _filter_features(context: ScoringContext, name: str) -> torch.Tensor:
    root = context.graph.tp_group(name)[0].dep.target.module
    weight = root.weight.detach()
    if is_conv1d(root):  # GPT-2's projections store [in, out]
        weight = weight.T
    return weight.flatten(1)[: root_width(context.graph, name)]


def elimination_order_scores(features: torch.Tensor) -> torch.Tensor:
    """Scores from greedy elimination of the most redundant channel (rows of `features`).

    >>> x = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.1], [3.0, -1.0, 0.0]])
    >>> int(elimination_order_scores(x).argmin()) in (0, 1)    # one of the duplicated pair goes first
    True
    """
    width = features.shape[0]
    centred = features - features.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1)
    alive = norms > 1e-8 * max(float(norms.max()), 1e-30)
    normalised = centred / norms.clamp_min(1e-30).unsqueeze(1)
    correlation = (normalised @ normalised.T).abs()
    correlation.fill_diagonal_(-1.0)
    correlation[~alive, :] = -1.0
    correlation[:, ~alive] = -1.0
    scores = torch.empty(width)
    kept = torch.ones(width, dtype=torch.bool)
    step = 0
    for index in torch.nonzero(~alive).flatten().tolist():  # constant channels first
        scores[index], kept[index] = step, False
        step += 1
    strength = norms / norms.max().clamp_min(1e-30)
    while step < width:
        most_similar = correlation[:, kept].max(dim=1).values  # to any other kept channel (diagonal is -1)
        priority = most_similar - 1e-6 * strength  # tie-break: the weaker of a duplicated pair goes
        priority[~kept] = -float("inf")
        index = int(torch.argmax(priority))
        scores[index], kept[index] = step, False
        step += 1
    return scores


@register_criterion("redundancy")
def redundancy(context: ScoringContext) -> dict[str, torch.Tensor]:
    use_data = bool(context.batches)
    context.cost["features"] = "activations" if use_data else "filters"
    features = _activation_features(context) if use_data else {
        name: _filter_features(context, name) for name in context.group_names}
    return {name: elimination_order_scores(features[name]) for name in context.group_names}
