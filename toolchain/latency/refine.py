"""Refit a latency predictor on the configurations the allocators choose under it.

An allocator optimises against the predictor, so it is drawn to configurations where the predictor is
optimistic. In the seeded budget sweep (BENCHMARKS.md) the widths `lpnet` and `knapsack` chose on ResNet-56
(3x16x16, onnxruntime, 1 thread) measured a median 27 % slower than the predictor said, while `uniform`'s and
`macs`' were within 3 %: a predictor fitted on randomly sampled configurations had never seen many groups cut
to their floor at once. One refinement round asks every allocator of the grid for its widths at the grid's
budgets under the current predictor, times those configurations on the target into the same database
(tagged `alloc:...`, one row each, skipped when already stored) and refits on everything; the fit holds half of
the allocator configurations out and scores them apart (`meta.allocator_heldout_metrics`).

    >>> config = RefineConfig("zoo:demo", (1, 1, 28, 28), Target("cpu"), "runs/predictors/demo-lpnet",
    ...                       "runs/latency-thread_cpu.db", "runs/predictors/demo-lpnet-refined")
    >>> config.grid.round_tos, config.rounds
    ((8,), 1)
    >>> summary = refine_on_allocations(config)                                        # doctest: +SKIP
    >>> summary["rounds"][0]["allocator_heldout"]["within_10pct"]                        # doctest: +SKIP
    0.95
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from toolchain.allocate import PredictorLatency
from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph
from toolchain.inputs import make_inputs, specs_from_key, vocab_size_of
from toolchain.latency.allocator_sampling import AllocatorGrid, allocator_configs, lpnet_macs_counter
from toolchain.latency.campaign import CampaignConfig
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.given_configs import time_given_configs
from toolchain.latency.predictors import load_predictor
from toolchain.targets import Target, measurement_lock


@dataclass(frozen=True)
class RefineConfig:
    """Which predictor to refine, where its measurements are, and where the refitted one goes."""

    model_spec: str
    input_shape: tuple  # an inputs key, as the predictor was trained at
    target: Target
    predictor_path: str  # the fitted lpnet artifact to start from (left as it is)
    db_path: str  # its measurement database: the allocator configurations are added to it
    out_path: str  # where the refitted predictor is saved
    rounds: int = 1
    weights: str | None = None  # the model's weights (safetensors); None: the seeded initial weights
    allocator_heldout_fraction: float = 0.5  # of the allocator configurations, scored apart instead of trained on
    # The budget runs' hardware multiple by default (BudgetConfig.round_to = 8): those are the widths asked about.
    grid: AllocatorGrid = field(default_factory=lambda: AllocatorGrid(round_tos=(8,)))

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ToolchainError(f"refinement rounds must be >= 1, got {self.rounds}")


def refine_on_allocations(config: RefineConfig, step: Callable[[str], None] = lambda _: None) -> dict:
    """Run `config.rounds` rounds (allocate under the predictor, time, refit); save the last predictor at
    `config.out_path`. Returns per round the configurations timed and the refitted predictor's scores."""
    import torch

    from toolchain.models import resolve_model

    runtime = config.target.resolve()
    # The grid ranks channels by l1 of the weights; without given weights they are drawn, so seed them: the same
    # predictor then always asks about the same configurations (nothing is timed twice on a rerun).
    torch.manual_seed(0)
    model, specs = resolve_model(config.model_spec, config.weights, inputs=specs_from_key(config.input_shape))
    example_input = make_inputs(specs, vocab_size_of(model.eval()))
    names = [g.name for g in PruningGraph(copy.deepcopy(model), example_input).groups]
    predictor = load_predictor(config.predictor_path, runtime.name, runtime.backend, runtime.threads)
    campaign = CampaignConfig.for_target(config.model_spec, config.db_path, config.target,
                                         samples=0, input_shape=tuple(config.input_shape))
    fit = FitConfig.for_target(config.db_path, "lpnet", config.target, models=(config.model_spec,),
                               allocator_heldout_fraction=config.allocator_heldout_fraction)
    rounds = []
    for index in range(config.rounds):
        configs = allocator_configs(model, example_input, PredictorLatency(predictor, names), config.grid,
                                    lpnet_macs_counter(predictor))
        step(f"refinement round {index + 1}: timing {len(configs)} configurations the allocators chose")
        with measurement_lock(config.target.lock_path):
            report = time_given_configs(campaign, configs)
        if report.failed:
            raise ToolchainError(f"timing allocator configurations failed for {len(report.failed)}: "
                                 f"{report.failed[0]}")
        predictor = fit_predictor(fit)
        rounds.append({"configurations": len(configs), "measured_now": report.measured,
                       "already_stored": report.skipped, "n_train": predictor.meta.n_train,
                       "n_allocator_train": predictor.meta.n_allocator_train,
                       "sampled_heldout": dict(predictor.meta.heldout_metrics),
                       "allocator_heldout": dict(predictor.meta.allocator_heldout_metrics or {})})
    predictor.save(config.out_path)
    return {"predictor": config.out_path, "rounds": rounds}
