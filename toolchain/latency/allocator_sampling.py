"""Width configurations the allocators produce: the set a latency predictor is held to.

A predictor is used by the allocators (`toolchain.allocate`), and they do not pick configurations the way a
profiling campaign samples them: widths land on hardware multiples, some groups are cut to their floor while
others stay dense, budgets sit at a few round fractions. Random held-out configurations alone can therefore
overstate how well a predictor does where it is used. This module asks each allocator (and the `uniform` /
`macs` baselines) for widths at a grid of budgets and channel multiples, tagged so that a fit
(`toolchain.latency.fitting`) can hold part of them out and report its score on them separately.

The scores come from a data-free criterion (`l1` by default): which channels a budget run keeps depends on
its data, but the widths per group, all the latency depends on, come from the allocator and the predictor.

Example:
    >>> grid = AllocatorGrid(allocators=("uniform",), round_tos=(8,), budget_ratios=(0.5,))
    >>> configs = allocator_configs(model, x, latency_model, grid)               # doctest: +SKIP
    >>> configs[0].tag                                                             # doctest: +SKIP
    'alloc:uniform:r8:b0.50'
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from toolchain.allocate import LatencyModel, allocate, build_problem
from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph
from toolchain.inputs import ModelInputs
from toolchain.latency.sampling import ALLOCATOR_TAG, SampledConfig
from toolchain.op_count import count_macs_params
from toolchain.saliency import score_groups


@dataclass(frozen=True)
class AllocatorGrid:
    """Which allocators to ask, at which channel multiples (`round_to`) and budgets (fractions of the dense
    model's predicted latency).

    >>> len(AllocatorGrid().budget_ratios), AllocatorGrid().round_tos
    (10, (1, 8, 16))
    """

    allocators: tuple[str, ...] = ("lpnet", "knapsack", "uniform", "macs")
    round_tos: tuple[int, ...] = (1, 8, 16)
    budget_ratios: tuple[float, ...] = (0.25, 0.325, 0.4, 0.475, 0.55, 0.625, 0.7, 0.775, 0.85, 0.925)
    criterion: str = "l1"  # data-free, so the grid needs no calibration data
    min_keep_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not self.allocators or not self.round_tos or not self.budget_ratios:
            raise ToolchainError("an allocator grid needs at least one allocator, round-to and budget")
        if any(not 0.0 < r <= 1.0 for r in self.budget_ratios):
            raise ToolchainError(f"budget ratios must be in (0, 1], got {self.budget_ratios}")
        if any(k < 1 for k in self.round_tos):
            raise ToolchainError(f"round-to multiples must be >= 1, got {self.round_tos}")


def allocator_tag(allocator: str, round_to: int, budget_ratio: float) -> str:
    """The sample tag of a configuration `allocator` chose at `round_to` under a budget ratio.

    >>> allocator_tag("knapsack", 8, 0.5)
    'alloc:knapsack:r8:b0.50'
    """
    return f"{ALLOCATOR_TAG}{allocator}:r{round_to}:b{budget_ratio:.2f}"


def _macs_counter(model: nn.Module, example_input: ModelInputs) -> Callable[[dict[str, int]], int]:
    """MACs of a width configuration (the `macs` baseline's measure), cached: it bisects on the same widths."""
    cache: dict[tuple, int] = {}

    def macs(widths: dict[str, int]) -> int:
        key = tuple(sorted(widths.items()))
        if key not in cache:
            variant = copy.deepcopy(model)
            PruningGraph(variant, example_input).shrink(widths)
            cache[key] = count_macs_params(variant, example_input)[0]
        return cache[key]

    return macs


def lpnet_macs_counter(predictor) -> Callable[[dict[str, int]], int]:
    """MACs of a width configuration read off a fitted lpnet predictor's channel maps (groups it does not
    name stay dense)."""
    import torch

    def macs(widths: dict[str, int]) -> int:
        with torch.no_grad():
            return int(predictor.module.macs(predictor.normalise(widths).unsqueeze(0))[0])

    return macs


def allocator_configs(model: nn.Module, example_input: ModelInputs, latency: LatencyModel,
                      grid: AllocatorGrid = AllocatorGrid(),
                      macs: Callable[[dict[str, int]], int] | None = None) -> list[SampledConfig]:
    """Every distinct configuration the grid's allocators choose under `latency`, first occurrence kept.

    `macs` counts a configuration's MACs for the `macs` baseline (default: shrink a copy and count, seconds
    per call on a large model; `lpnet_macs_counter` reads them off a fitted lpnet instead). Budgets a round-to
    cannot reach (the narrowest allowed model predicted over budget) are skipped: a budget run would refuse
    them too."""
    graph = PruningGraph(copy.deepcopy(model).eval(), example_input)
    scores = score_groups(graph.model, graph, grid.criterion)
    macs = macs or _macs_counter(model, example_input)
    configs: dict[tuple, SampledConfig] = {}
    for round_to in grid.round_tos:
        problem = build_problem(graph.groups, scores, latency, round_to, grid.min_keep_ratio,
                                grid.min_keep_ratio, macs=macs)
        dense_ms = problem.predicted_ms(problem.dense())
        for ratio in grid.budget_ratios:
            for name in grid.allocators:
                try:
                    widths = allocate(name, problem, ratio * dense_ms)
                except ToolchainError as error:
                    if "unreachable" in str(error):
                        continue
                    raise
                key = tuple(sorted(widths.items()))
                configs.setdefault(key, SampledConfig(allocator_tag(name, round_to, ratio), dict(widths)))
    return list(configs.values())
