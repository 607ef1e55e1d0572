"""`uniform` baseline: one keep ratio for every group, the largest whose predicted latency meets the budget."""

from __future__ import annotations

from toolchain.allocate import AllocationProblem, register_allocator

RATIO_GRID = 400


@register_allocator("uniform")
def uniform(problem: AllocationProblem, budget_ms: float) -> dict[str, int]:
    configs = [{g.name: max(g.min_width, g.round(g.dense_width * (i / RATIO_GRID))) for g in problem.groups}
               for i in range(RATIO_GRID, 0, -1)]
    for config, ms in zip(configs, problem.predicted_ms_many(configs)):
        if ms <= budget_ms:
            return config
    return problem.narrowest()
