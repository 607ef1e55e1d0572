"""Saliency criteria: per-channel scores of each coupled group, registered by name.

A criterion is one function `fn(context) -> {group name: scores}` decorated with
`@register_criterion("name")`; the scores have one finite entry per root output channel of the group,
and the highest-scored channels are kept. `score_groups` is the one door.

    l1, l2      filter magnitude                 bn_scale     BatchNorm scale (network slimming)
    taylor      first-order Taylor (Molchanov)   shapley      Monte Carlo Shapley value, sampled to stability
    redundancy  duplicated activations first     sensitivity  largest relative contribution downstream
    random      control                          composite    per group, the component that costs least loss
                                                              (judged on held-apart images)

>>> graph = PruningGraph(model, torch.randn(1, 1, 28, 28))                      # doctest: +SKIP
>>> scores = score_groups(model, graph, "taylor", load_mnist5k().calib)         # doctest: +SKIP
>>> graph.shrink({"stem.0": 16}, scores)                                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph
from toolchain.saliency._masking import Batch, calibration_batches
from toolchain.threads import torch_threads


@dataclass(frozen=True)
class SaliencyConfig:
    """How criteria use data and how much they may spend."""

    batch_size: int = 64  # calibration images per batch
    max_batches: int = 4  # calibration batches a criterion reads (Taylor accumulates over them)
    shapley_samples: int = 4  # Monte Carlo permutations per round; `shapley` checks convergence after each
    shapley_seconds: float = 60.0  # time limit of `shapley` over all groups (each group gets one round at least)
    shapley_max_permutations: int = 256  # per group, whatever time is left
    shapley_stable_rounds: int = 2  # converged once the keep set is unchanged over this many successive rounds
    shapley_in_context: bool = True  # play each group's game with the groups scored before it pruned to width
    shapley_clock: str = "wall"  # the limit's clock: "wall" or "cpu" (process CPU time: fair on a busy machine)
    shapley_batch: int = 16  # calibration images per evaluation of the Shapley game
    shapley_truncation: float = 0.05  # stop a permutation once the loss is this close (relative) to its end
    composite_of: tuple[str, ...] = ("l2", "taylor", "sensitivity", "redundancy")
    probe_keep_ratio: float = 0.5  # composite: width fraction its choice is judged at, when no widths given
    target_widths: dict[str, int] = field(default_factory=dict)  # composite: judge at these widths instead
    seed: int = 0
    torch_threads: int = 1  # scoring on one thread: several times faster on a loaded 2-core machine

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_batches", "shapley_samples", "shapley_max_permutations",
                     "shapley_stable_rounds", "shapley_batch"):
            if getattr(self, name) < 1:
                raise ToolchainError(f"saliency {name} must be at least 1, not {getattr(self, name)}")
        if not self.shapley_seconds >= 0:
            raise ToolchainError(f"saliency shapley_seconds must be >= 0, not {self.shapley_seconds}")
        if self.shapley_clock not in ("wall", "cpu"):
            raise ToolchainError(f"saliency shapley_clock must be 'wall' or 'cpu', not {self.shapley_clock!r}")


@dataclass
class ScoringContext:
    """What a criterion sees: the model (eval mode), its pruning graph, calibration batches, the config,
    and a `cost` dict where a criterion records what it spent (evaluations, permutations)."""

    model: nn.Module
    graph: PruningGraph
    batches: list[Batch]
    config: SaliencyConfig
    cost: dict = field(default_factory=dict)
    _references: list[torch.Tensor] | None = None

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.graph.groups]

    def references(self) -> list[torch.Tensor]:
        """The dense model's outputs on each calibration batch (pseudo-labels when there are no labels)."""
        if self._references is None:
            with torch.no_grad():
                self._references = [self.model(inputs) for inputs, _ in self.batches]
        return self._references

    def require_data(self, criterion: str) -> None:
        if not self.batches:
            raise ToolchainError(f"criterion {criterion!r} needs calibration data (--data); "
                                 "l1, l2, bn_scale and random do not")


Criterion = Callable[[ScoringContext], dict[str, torch.Tensor]]
_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Register a criterion function under `name`."""

    def wrap(fn: Criterion) -> Criterion:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} registered twice")
        _CRITERIA[name] = fn
        return fn

    return wrap


def list_criteria() -> list[str]:
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    if name not in _CRITERIA:
        raise ToolchainError(f"unknown criterion {name!r}; valid: {', '.join(list_criteria())}")
    return _CRITERIA[name]


def score_groups_report(model: nn.Module, graph: PruningGraph, criterion: str, calib_batch=None,
                        config: SaliencyConfig | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Scores of every prunable group plus a report: criterion, seconds and what the criterion spent."""
    config = config or SaliencyConfig()
    fn = get_criterion(criterion)
    context = ScoringContext(model, graph, calibration_batches(calib_batch, config.batch_size, config.max_batches),
                             config)
    was_training = model.training
    model.eval()
    start_s = time.perf_counter()
    try:
        with torch_threads(config.torch_threads):
            scores = fn(context)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start_s
    for name, score in scores.items():
        if not torch.isfinite(score).all():
            raise ToolchainError(f"criterion {criterion!r} gave non-finite scores for group {name!r}")
    return ({k: v.detach().float() for k, v in scores.items()},
            {"criterion": criterion, "seconds": round(seconds, 3), **context.cost})


def score_groups(model: nn.Module, graph: PruningGraph, criterion: str, calib_batch=None,
                 config: SaliencyConfig | None = None) -> dict[str, torch.Tensor]:
    """Per-channel scores (higher = keep) of every prunable group of `graph` by `criterion`.

    `calib_batch` is a tensor of inputs, an (inputs, labels) pair, or a Dataset (read in batches);
    criteria that need data refuse to run without it.
    """
    return score_groups_report(model, graph, criterion, calib_batch, config)[0]


def to_ranks(score: torch.Tensor) -> torch.Tensor:
    """Scores -> ranks in [0, 1] (0 = least salient), so criteria of different scales compare.

    >>> to_ranks(torch.tensor([3.0, 1.0, 2.0]))
    tensor([1.0000, 0.0000, 0.5000])
    """
    order = torch.argsort(torch.argsort(score, stable=True), stable=True).float()
    return order / max(score.numel() - 1, 1)


from toolchain.saliency import composite, magnitude, redundancy, sensitivity, shapley, taylor  # noqa: E402,F401,I001
