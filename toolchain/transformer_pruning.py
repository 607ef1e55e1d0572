"""Pruning a transformer encoder by its feed-forward widths and (where the graph offers them) whole heads.

Only two kinds of group are touched; everything else keeps its dense width:

* feed-forward groups: the hidden width of a two-Linear MLP (`intermediate.dense` -> `output.dense`
  in BERT). Nothing mixes those channels between the two layers, so the graph's check that the
  pruned model equals the dense model with the removed channels zeroed applies and runs;
* attention groups of kind "heads" (whole heads, the head count updated by the graph). BERT's
  q/k/v groups are kind "channels" until the graph prunes Hugging Face attention by whole heads;
  channel-wise q/k/v pruning would regroup the kept channels into mixed heads, so such groups are
  never chosen here, and asking for heads where the graph offers none is an error.

The hidden (residual) width is never pruned: it reaches the output and every LayerNorm.

>>> result = prune_transformer(create_model("minilm"), model_example_inputs("minilm"),
...                            TransformerPruneConfig(feed_forward_ratio=0.5))   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph import ChannelGroup, PruningGraph, round_width
from toolchain.inputs import ModelInputs
from toolchain.pruning import PruneConfig, PruneResult, prune


@dataclass(frozen=True)
class TransformerPruneConfig:
    """Share of each feed-forward width and of each attention layer's heads to remove."""

    feed_forward_ratio: float = 0.5
    head_ratio: float = 0.0
    round_to: int = 8  # feed-forward widths are kept at multiples of this (heads are whole by construction)
    # Which feed-forward channels are kept: "magnitude" (the graph's L2 over the group's weights) or
    # "activation" (mean |activation| on calibration text x the norm of the weights reading it; needs data).
    criterion: str = "magnitude"

    def __post_init__(self):
        for name in ("feed_forward_ratio", "head_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ToolchainError(f"{name} {getattr(self, name)} is outside [0, 1)")
        if self.criterion not in CRITERIA:
            raise ToolchainError(f"unknown criterion {self.criterion!r}; valid: {', '.join(CRITERIA)}")


CRITERIA = ("magnitude", "activation")


def feed_forward_groups(graph: PruningGraph) -> list[ChannelGroup]:
    """Channel groups that are exactly one Linear's outputs feeding one Linear's inputs (an MLP's hidden width)."""
    def is_linear(path: str) -> bool:
        return isinstance(graph.model.get_submodule(path), nn.Linear)

    return [g for g in graph.groups if g.kind == "channels" and len(g.layers) == 2 and all(map(is_linear, g.layers))]


def attention_head_groups(graph: PruningGraph) -> list[ChannelGroup]:
    return [g for g in graph.groups if g.kind == "heads"]


def transformer_widths(graph: PruningGraph, config: TransformerPruneConfig) -> dict[str, int]:
    """Target widths: feed-forward groups by `feed_forward_ratio`, head groups by `head_ratio`, others dense."""
    heads = attention_head_groups(graph)
    if config.head_ratio > 0 and not heads:
        raise ToolchainError("this model's attention offers no whole-head groups to prune; set head_ratio to 0 "
                             "(its q/k/v groups are pruned only as whole heads)")
    widths = {g.name: g.width for g in graph.groups}
    for group in feed_forward_groups(graph):
        widths[group.name] = round_width(group.width * (1 - config.feed_forward_ratio), group.width, config.round_to)
    for group in heads:
        widths[group.name] = round_width(group.width * (1 - config.head_ratio), group.width, unit=group.unit)
    return widths


@torch.no_grad()
def feed_forward_activation_scores(model: nn.Module, graph: PruningGraph,
                                   calibration: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per feed-forward channel: mean |activation| over real tokens x L2 norm of the weights that read it.

    That product is the size of the channel's contribution to the block's output; weight magnitude
    alone ignores how strongly text actually drives each channel.
    """
    # group paths are the same in `model` as in the copy the graph was built on
    consumers = {g.name: model.get_submodule(next(p for p in g.layers if p != g.name))
                 for g in feed_forward_groups(graph)}
    sums = {name: torch.zeros(consumer.in_features) for name, consumer in consumers.items()}
    token_mask: list[torch.Tensor] = []

    def accumulate(name: str):
        def hook(_module, args) -> None:
            mask = token_mask[0].unsqueeze(-1).to(args[0].dtype)
            sums[name] += (args[0].abs() * mask).sum(dim=(0, 1))
        return hook

    hooks = [consumer.register_forward_pre_hook(accumulate(name)) for name, consumer in consumers.items()]
    tokens = 0
    try:
        model.eval()
        for batch in calibration:
            token_mask[:] = [batch["attention_mask"]]
            model(**batch)
            tokens += int(batch["attention_mask"].sum())
    finally:
        for hook in hooks:
            hook.remove()
    return {name: sums[name] / max(tokens, 1) * consumer.weight.norm(dim=0) for name, consumer in consumers.items()}


def prune_transformer(model: nn.Module, example_input: ModelInputs, config: TransformerPruneConfig,
                      calibration: list[dict[str, torch.Tensor]] | None = None,
                      protect: tuple[str, ...] = ()) -> PruneResult:
    """A pruned copy of `model` (the input is untouched), verified by the graph's check after shrinking.

    `calibration` (batches of named inputs with an `attention_mask`) is read by the "activation" criterion.
    """
    graph = PruningGraph(copy.deepcopy(model).eval(), example_input, protect=protect)
    widths = transformer_widths(graph, config)
    scores = None
    if config.criterion == "activation":
        if not calibration:
            raise ToolchainError("the activation criterion needs calibration batches")
        scores = feed_forward_activation_scores(model, graph, calibration)
    result = prune(model, example_input, PruneConfig(ratio=0.0, round_to=config.round_to, protect=protect,
                                                     widths=widths), scores=scores)
    result.manifest["transformer_prune"] = {
        "criterion": config.criterion,
        "feed_forward_ratio": config.feed_forward_ratio,
        "head_ratio": config.head_ratio,
        "feed_forward_groups": [g.name for g in feed_forward_groups(graph)],
        "head_groups": [g.name for g in attention_head_groups(graph)],
    }
    return result



@dataclass(frozen=True)
class BudgetSearchConfig:
    """Bisection over the feed-forward ratio, each try pruned and measured on the target."""

    budget_ms: float
    max_tries: int = 6
    max_ratio: float = 0.95


@dataclass
class BudgetSearchResult:
    result: PruneResult | None  # the least-pruned model measured within the budget; None if none was
    measured_latency_ms: float | None
    tries: list[dict]  # every try: feed_forward_ratio, measured_latency_ms, within_budget


def prune_transformer_to_budget(model: nn.Module, example_input: ModelInputs, search: BudgetSearchConfig,
                                measure_ms: Callable[[nn.Module], float], config: TransformerPruneConfig,
                                calibration: list[dict[str, torch.Tensor]] | None = None) -> BudgetSearchResult:
    """The smallest feed-forward ratio whose pruned model's MEASURED latency is within `budget_ms`.

    Latency falls with the ratio, so bisection on measurements needs no latency predictor; the price is
    one prune + export + timing per try (seconds for MiniLM), which is why the tries are bounded.
    `config` supplies everything but the ratio (criterion, head ratio, rounding).
    """
    low, high = 0.0, search.max_ratio  # low: known over budget (or untried); high: the most we prune
    best: tuple[PruneResult, float] | None = None
    tries = []
    for _ in range(search.max_tries):
        ratio = high if best is None else (low + high) / 2
        pruned = prune_transformer(model, example_input, replace(config, feed_forward_ratio=ratio), calibration)
        latency_ms = measure_ms(pruned.model)
        within = latency_ms <= search.budget_ms
        tries.append({"feed_forward_ratio": round(ratio, 4), "measured_latency_ms": latency_ms,
                      "within_budget": within})
        if within:
            best, high = (pruned, latency_ms), ratio
        elif best is None:
            break  # even the most pruned model is over budget: unreachable by feed-forward widths alone
        else:
            low = ratio
    return BudgetSearchResult(best[0] if best else None, best[1] if best else None, tries)
