"""`macs` baseline: what a latency-unaware tool does. Channels of every group are ranked together by the
criterion's scores (each group's scores divided by their mean, Torch-Pruning's global-pruning habit) and the
lowest are removed until the MACs fall to the fraction of the dense MACs equal to the budget's fraction of
the dense predicted latency. The latency predictor is used only for that fraction."""

from __future__ import annotations

from collections.abc import Callable

import torch

from toolchain.allocate import AllocationProblem, register_allocator
from toolchain.errors import ToolchainError

BISECTION_STEPS = 14


def _widths_above(problem: AllocationProblem, normalised: dict[str, torch.Tensor], threshold: float):
    return {g.name: max(g.min_width, g.round(int((normalised[g.name] >= threshold).sum())))
            for g in problem.groups}


def global_ranking(problem: AllocationProblem, fits: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Keep the channels whose normalised score is above one global threshold: the lowest threshold (most
    channels kept) whose widths `fits`, found by bisection; the narrowest allowed model if none does."""
    normalised = {}
    for g in problem.groups:
        score = problem.scores[g.name].float()[: g.dense_width]
        score = score - score.min() if score.min() < 0 else score
        normalised[g.name] = score / score.mean().clamp_min(1e-12)
    low, high = 0.0, max(float(v.max()) for v in normalised.values()) + 1.0
    best = problem.narrowest()
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        widths = _widths_above(problem, normalised, middle)
        if fits(widths):
            best, high = widths, middle
        else:
            low = middle
    return best


@register_allocator("macs")
def macs(problem: AllocationProblem, budget_ms: float) -> dict[str, int]:
    if problem.macs is None:
        raise ToolchainError("the macs allocator needs a MAC counter for the model")
    fraction = budget_ms / problem.predicted_ms(problem.dense())
    dense_macs = problem.macs(problem.dense())
    return global_ranking(problem, lambda widths: problem.macs(widths) <= fraction * dense_macs)
