"""`knapsack`: HALP-style latency-constrained knapsack (Shen et al., 2022).

Each group's allowed widths are the options of a multiple-choice knapsack: the value of an option is minus
its loss (the criterion's importance lost), its cost the latency change the predictor gives when only that
group moves from the current configuration. Latency is not additive across groups, so the knapsack is
solved by dynamic programming around the dense model, re-linearised around its solution a few times, and
the result is finished by a greedy repair on the full prediction.
"""

from __future__ import annotations

import numpy as np

from toolchain.allocate import AllocationProblem, greedy_repair, register_allocator

LINEARISATIONS = 3
CAPACITY_BINS = 2000


def _solve(options: list[list[tuple[int, float, float]]], capacity_ms: float) -> list[int] | None:
    """Index of the chosen option per group maximising value with summed cost <= capacity (DP on bins)."""
    floors = [min(cost for _, cost, _ in group) for group in options]
    spare = capacity_ms - sum(floors)
    if spare < 0:
        return None
    unit = max(spare, 1e-12) / CAPACITY_BINS
    best = np.zeros(CAPACITY_BINS + 1)
    choices = []
    for group, floor in zip(options, floors):
        new = np.full(CAPACITY_BINS + 1, -np.inf)
        pick = np.zeros(CAPACITY_BINS + 1, dtype=np.int64)
        for k, (_, cost, value) in enumerate(group):
            bins = int(np.ceil((cost - floor) / unit - 1e-9))
            if bins > CAPACITY_BINS:
                continue
            candidate = np.full(CAPACITY_BINS + 1, -np.inf)
            candidate[bins:] = best[: CAPACITY_BINS + 1 - bins] + value
            better = candidate > new
            new[better], pick[better] = candidate[better], k
        best = new
        choices.append((pick, [int(np.ceil((c - floor) / unit - 1e-9)) for _, c, _ in group]))
    if not np.isfinite(best[-1]):
        return None
    chosen, budget_bin = [], CAPACITY_BINS
    for pick, bins in reversed(choices):
        k = int(pick[budget_bin])
        chosen.append(k)
        budget_bin -= bins[k]
    return list(reversed(chosen))


@register_allocator("knapsack")
def knapsack(problem: AllocationProblem, budget_ms: float) -> dict[str, int]:
    widths = problem.dense()
    for _ in range(LINEARISATIONS):
        base_ms = problem.predicted_ms(widths)
        configs, owners = [], []
        for g in problem.groups:
            for w in g.allowed():
                configs.append({**widths, g.name: w})
                owners.append((g.name, w))
        latencies = problem.predicted_ms_many(configs)
        options: dict[str, list[tuple[int, float, float]]] = {g.name: [] for g in problem.groups}
        for (name, w), ms in zip(owners, latencies):
            options[name].append((w, ms - base_ms, -float(problem.curves[name][w])))
        chosen = _solve([options[n] for n in problem.names], budget_ms - base_ms)
        if chosen is None:
            break
        solution = {n: options[n][k][0] for n, k in zip(problem.names, chosen)}
        if solution == widths:
            break
        widths = solution
    return greedy_repair(problem, widths, budget_ms)
