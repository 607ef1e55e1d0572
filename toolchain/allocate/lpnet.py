"""`lpnet`: relaxed per-group widths optimised by gradient through the differentiable latency predictor
(W-Gates' LPNet), minimising the criterion's importance lost plus a latency penalty; then rounded to the
hardware multiple and repaired greedily on the prediction so the budget is met.
"""

from __future__ import annotations

import torch

from toolchain.allocate import AllocationProblem, greedy_repair, register_allocator
from toolchain.allocate.uniform import uniform
from toolchain.errors import ToolchainError

STEPS = 300
LEARNING_RATE = 0.05
PENALTY_START, PENALTY_END = 10.0, 1000.0


def _interpolated_loss(curves: list[torch.Tensor], widths: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear loss curves read at continuous widths (differentiable)."""
    total = widths.new_zeros(())
    for curve, width in zip(curves, widths):
        low = width.detach().floor().clamp(0, curve.numel() - 2).long()
        fraction = width - low
        total = total + curve[low] + fraction * (curve[low + 1] - curve[low])
    return total


@register_allocator("lpnet")
def lpnet(problem: AllocationProblem, budget_ms: float) -> dict[str, int]:
    if not problem.latency.differentiable:
        raise ToolchainError("the lpnet allocator needs a differentiable latency model (an lpnet predictor); "
                             "use --allocator knapsack with other predictors")
    dense = problem.vector(problem.dense())
    low = problem.vector(problem.narrowest())
    curves = [problem.curves[n].float() if problem.curves[n].numel() > 1 else torch.zeros(2) for n in problem.names]
    scale = max(float(sum(c.max() for c in curves)), 1e-9)
    start = (problem.vector(uniform(problem, budget_ms)) - low) / (dense - low).clamp_min(1e-9)
    logits = torch.logit(start.clamp(0.02, 0.98)).requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=LEARNING_RATE)
    for step in range(STEPS):
        penalty = PENALTY_START * (PENALTY_END / PENALTY_START) ** (step / (STEPS - 1))
        widths = low + (dense - low) * torch.sigmoid(logits)
        latency_ms = problem.latency.ms_batch(widths.unsqueeze(0))[0]
        objective = _interpolated_loss(curves, widths) / scale + penalty * torch.relu(latency_ms / budget_ms - 1) ** 2
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
    with torch.no_grad():
        relaxed = low + (dense - low) * torch.sigmoid(logits)
    rounded = {g.name: g.round(float(w)) for g, w in zip(problem.groups, relaxed)}
    return greedy_repair(problem, rounded, budget_ms)
