"""Choosing the next widths to measure from the models measured so far (the budget loop's search).

Each helper takes `measured`, the earlier tries as (measured ms, predictor ms, widths), and returns widths not
measured yet, or None when it has nothing new. In the order the loop asks them:

* `between_measured`: once one model measured below the band and another above it, walk between them;
* `refinement`: step groups one at a time next to the measured model closest to the aim, with the predictor
  calibrated there;
* `nearest_untried`: the last resort when everything else proposes a model already measured: one or two
  group steps from the model closest to the aim.

The band is [lower_ratio, 1] x budget and the aim `aim_ratio` x budget (BudgetConfig).
"""

from __future__ import annotations

import math

from toolchain.allocate import AllocationProblem, BudgetConfig, greedy_repair

Measured = list[tuple[float, float, dict[str, int]]]


# Allocators whose misses are corrected by local refinement from the first miss on (the toolchain's own). The
# baselines keep their allocation rule until measurements bracket the band and nothing measured-untried lies
# between the bracketing models; refinement then finishes their search too (it only makes them stronger).
REFINED_ALLOCATORS = ("lpnet", "knapsack")


def _closest_to_aim(config: BudgetConfig, budget_ms: float, measured: Measured) -> tuple[float, float, dict[str, int]]:
    aim_ms = config.aim_ratio * budget_ms
    return min(measured, key=lambda m: abs(math.log(m[0] / aim_ms)))


def refinement(problem: AllocationProblem, config: BudgetConfig, budget_ms: float,
                measured: Measured, bracketed: bool = False) -> dict[str, int] | None:
    """Widths for the next try, found next to the measured model closest to the aim instead of re-allocated.

    `measured` holds (measured ms, predictor ms, widths) of the earlier tries. Re-allocating from scratch
    for a rescaled target moves many groups at once, often by more than the hit band; here the predictor is
    calibrated at one measured point (measured / predicted there) and groups are stepped one at a time
    (`greedy_repair`: down by least importance per ms saved, then up by most importance per ms spent) until
    the calibrated prediction reaches `aim_ratio` x budget. None when that gives nothing new to measure.
    """
    if config.allocator not in REFINED_ALLOCATORS and not bracketed:
        return None
    measured_ms, predictor_ms, widths = _closest_to_aim(config, budget_ms, measured)
    local_target_ms = config.aim_ratio * budget_ms * predictor_ms / measured_ms
    narrowest = problem.narrowest()
    refined = (narrowest if local_target_ms < problem.predicted_ms(narrowest)
               else greedy_repair(problem, widths, local_target_ms, fill=True))
    return None if any(refined == w for _, _, w in measured) else refined


def steps_between(problem: AllocationProblem, a: dict[str, int], b: dict[str, int]) -> int:
    """How many single-group width steps lead from `a` to `b`."""
    allowed = {g.name: g.allowed() for g in problem.groups}
    return sum(abs(allowed[n].index(a[n]) - allowed[n].index(b[n])) for n in problem.names)


def bracket(problem: AllocationProblem, config: BudgetConfig, budget_ms: float, measured: Measured):
    """The two ends of the walk: ((ms, widths) measured below the band, (ms, widths) measured above it), the
    pair fewest width steps apart (ties: the pair measured closest together); None while the measurements
    lie on one side only.

    Fewest steps, not slowest-below and fastest-above: latency is not monotone along a walk (alignment; sweeps
    measured walk points below the walk's lower end and, on the demo, five points in a row just above 0.72 ms
    with the upper end at 0.721 ms), and every point of a walk lies fewer steps from both ends, so whichever
    side it lands on the next walk is shorter: a bisection that cannot stall.
    """
    below = [(ms, w) for ms, _, w in measured if ms < config.lower_ratio * budget_ms]
    above = [(ms, w) for ms, _, w in measured if ms > budget_ms]
    if not below or not above:
        return None
    return min(((low, high) for low in below for high in above),
               key=lambda pair: (steps_between(problem, pair[0][1], pair[1][1]), pair[1][0] - pair[0][0]))


def between_measured(problem: AllocationProblem, config: BudgetConfig, budget_ms: float,
                      measured: Measured) -> dict[str, int] | None:
    """Widths between the two ends found by `bracket`: a model measured below the band and one above it.

    Once two measurements bracket the band, they say more than the predictor (held-out errors of 10-15% on
    small inputs, and a width step of a baseline can move the latency by more than the band). The path from
    the lower model to the upper one moves one group one allowed step at a time, each group's steps spread
    evenly over the path (an interpolation of the two width vectors at the finest granularity); the next try
    is the point where the straight line through the two measurements meets the aim (at least one step from
    either end, so every try narrows the bracket), or the untried point nearest to it. None while nothing
    brackets the band or every point between has been tried.
    (Lower model measured at 0.8 ms, upper at 1.2 ms, band [0.9, 1.0] ms, aim 0.95 ms: 38% of the way up.)
    """
    found = bracket(problem, config, budget_ms, measured)
    if found is None:
        return None
    (low_ms, low), (high_ms, high) = found
    steps = []  # (position on the path in (0, 1], group order, group, width after the step)
    for order, group in enumerate(problem.groups):
        allowed = group.allowed()
        start, end = allowed.index(low[group.name]), allowed.index(high[group.name])
        direction = 1 if end > start else -1
        n_steps = abs(end - start)
        steps += [((k - 0.5) / n_steps, order, group.name, allowed[start + direction * k])
                  for k in range(1, n_steps + 1)]
    steps.sort()
    if len(steps) < 2:
        return None
    share = (config.aim_ratio * budget_ms - low_ms) / (high_ms - low_ms)
    aim_taken = min(max(round(share * len(steps)), 1), len(steps) - 1)
    tried = [w for _, _, w in measured]
    # The secant's point, or the untried point of the path nearest to it (a disturbed timing of one point
    # must not end the walk).
    for n_taken in sorted(range(1, len(steps)), key=lambda n: abs(n - aim_taken)):
        widths = dict(low)
        for _, _, name, width in steps[:n_taken]:
            widths[name] = width
        if widths not in tried:
            return widths
    return None


def nearest_untried(problem: AllocationProblem, config: BudgetConfig, budget_ms: float,
                    measured: Measured) -> dict[str, int] | None:
    """Untried widths one group step, or one step up and another down, from the measured model closest to the
    aim: of those whose prediction (calibrated at that model) lies in the band, the one losing least
    importance; if none does, the one predicted nearest the aim. None when every neighbour was measured.

    A width step of a coupled group can move the latency by more than the band (ResNet-56 at 16x16: one
    residual stream from 8 to 16 channels, +33%), and then allocator, walk and refinement can all come back to
    models already measured; a step up paid for by a step down elsewhere moves it by less.
    """
    measured_ms, predictor_ms, widths = _closest_to_aim(config, budget_ms, measured)
    allowed = {g.name: g.allowed() for g in problem.groups}

    def stepped(base: dict[str, int], name: str, step: int) -> dict[str, int] | None:
        index = allowed[name].index(base[name]) + step
        return {**base, name: allowed[name][index]} if 0 <= index < len(allowed[name]) else None

    singles = [c for name in problem.names for step in (1, -1) if (c := stepped(widths, name, step)) is not None]
    ups = [(name, c) for name in problem.names if (c := stepped(widths, name, 1)) is not None]
    pairs = [c for up, wider in ups for down in problem.names if down != up
             if (c := stepped(wider, down, -1)) is not None]
    tried = [w for _, _, w in measured]
    candidates = [c for c in singles + pairs if c not in tried]
    if not candidates or predictor_ms <= 0:
        return None
    calibrated = [ms * measured_ms / predictor_ms for ms in problem.predicted_ms_many(candidates)]
    aim_ms = config.aim_ratio * budget_ms
    in_band = [i for i, ms in enumerate(calibrated) if config.lower_ratio * budget_ms <= ms <= budget_ms]
    if in_band:
        return candidates[min(in_band, key=lambda i: problem.loss(candidates[i]))]
    return candidates[min(range(len(candidates)), key=lambda i: abs(math.log(calibrated[i] / aim_ms)))]

