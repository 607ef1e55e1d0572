"""The pruning API: resolve widths, shrink physically, count what was saved.

>>> result = prune(create_model("demo"), torch.randn(1, 1, 28, 28), ratio=0.5)
>>> result.manifest["params"] < result.manifest["dense_params"]
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph, round_width, widths_for_ratio
from toolchain.inputs import ModelInputs, input_tensors
from toolchain.manifest import Manifest, Pruning, Verification
from toolchain.op_count import count_macs_params


@dataclass(frozen=True)
class PruneConfig:
    """What to remove. `group_ratios` (group name -> ratio) and `widths` override the uniform `ratio`."""

    ratio: float = 0.5
    round_to: int = 8
    protect: tuple[str, ...] = ()
    group_ratios: dict[str, float] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)


@dataclass
class PruneResult:
    model: nn.Module
    widths: dict[str, int]
    manifest: dict


def toolchain_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toolchain")
    except PackageNotFoundError:
        return "0+unknown"


def resolve_widths(graph: PruningGraph, config: PruneConfig) -> dict[str, int]:
    """Per-group target widths from the uniform ratio, per-group ratios and explicit widths."""
    if config.round_to < 1:
        raise ToolchainError(f"round-to must be >= 1, got {config.round_to}")
    widths = widths_for_ratio(graph, config.ratio, config.round_to)
    for name, ratio in config.group_ratios.items():
        group = graph.group(name)
        if not 0.0 <= ratio < 1.0:
            raise ToolchainError(f"ratio {ratio} for group {name!r} is outside [0, 1)")
        widths[name] = round_width(group.width * (1.0 - ratio), group.width, config.round_to, group.unit)
    for name, width in config.widths.items():
        graph.group(name)
        widths[name] = int(width)
    return widths


def prune(model: nn.Module, example_input: ModelInputs, config: PruneConfig | None = None,
          scores: dict[str, torch.Tensor] | None = None, *, in_place: bool = False, **overrides) -> PruneResult:
    """Return a physically shrunk copy of `model` (the input is left untouched) and its manifest.

    Keyword overrides are `PruneConfig` fields: `prune(model, x, ratio=0.3, round_to=16)`. `in_place=True`
    shrinks `model` itself, for a caller that no longer needs the dense model: no copy of its weights (1.2 s and
    2.4 GB for ViT-H/14).
    """
    config = replace(config or PruneConfig(), **overrides)
    dense_counts = None
    if in_place:  # counted before the graph folds weight-standardized convs into the model
        try:
            dense_counts = count_macs_params(model, example_input)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001, S110 - a model that rejects the input (a user's forward may even
            pass  # call sys.exit) is told so in one line by the graph's trace below, which runs the same forward
    pruned = model.eval() if in_place else copy.deepcopy(model).eval()
    # The graph's first forward (Torch-Pruning's trace) is the input check: one line if the model rejects the input.
    graph = PruningGraph(pruned, example_input, protect=config.protect)
    dense_macs, dense_params = dense_counts or count_macs_params(model, example_input)
    widths = resolve_widths(graph, config)
    graph.shrink(widths, scores)
    macs, params = count_macs_params(pruned, example_input)
    manifest = Manifest(
        input_shape=tuple(input_tensors(example_input)[0].shape),
        pruning=Pruning(dense_params=dense_params, params=params, dense_macs=dense_macs, macs=macs,
                        ratio=config.ratio, round_to=config.round_to, protected_layers=tuple(config.protect),
                        per_group_widths=graph.widths(), dense_group_widths=graph.dense_widths(),
                        frozen_groups={f.name: f.reason for f in graph.frozen}),
        verification=Verification(shrink_relative_error=graph.verified_error,
                                  shrink_module_outputs=graph.verified_module_outputs),
        toolchain_version=toolchain_version(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    ).to_json()
    return PruneResult(pruned, graph.widths(), manifest)
