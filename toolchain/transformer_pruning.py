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
from dataclasses import dataclass

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

    def __post_init__(self):
        for name in ("feed_forward_ratio", "head_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ToolchainError(f"{name} {getattr(self, name)} is outside [0, 1)")


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


def prune_transformer(model: nn.Module, example_input: ModelInputs, config: TransformerPruneConfig,
                      protect: tuple[str, ...] = ()) -> PruneResult:
    """A pruned copy of `model` (the input is untouched), verified by the graph's check after shrinking."""
    graph = PruningGraph(copy.deepcopy(model).eval(), example_input, protect=protect)
    widths = transformer_widths(graph, config)
    result = prune(model, example_input, PruneConfig(ratio=0.0, round_to=config.round_to, protect=protect,
                                                     widths=widths))
    result.manifest["transformer_prune"] = {
        "feed_forward_ratio": config.feed_forward_ratio,
        "head_ratio": config.head_ratio,
        "feed_forward_groups": [g.name for g in feed_forward_groups(graph)],
        "head_groups": [g.name for g in attention_head_groups(graph)],
    }
    return result

