"""The budget search: propose widths, measure the pruned model on the target, observe, until one lands in the band.

`BudgetSearch` holds the trials (`toolchain.budget_trial.Trial`) and the internal target. Once measurements
exist, the widths of the next trial come from these helpers rather than from the allocator; each takes
`measured`, the earlier trials, and returns widths not measured yet, or None when it has nothing new. In the
order the search asks them:

* `between_measured`: once one model measured below the band and another above it, walk between them;
* `refinement`: step groups one at a time next to the measured model closest to the aim, with the predictor
  calibrated there;
* `nearest_untried`: the last resort when everything else proposes a model already measured: one or two
  group steps from the model closest to the aim.

The band is [lower_ratio, 1] x budget and the aim `aim_ratio` x budget (BudgetConfig).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

from toolchain.allocate import AllocationProblem, BudgetConfig, allocate, greedy_repair
from toolchain.allocate.correction import MeasuredCorrection
from toolchain.budget_check import CHECKED_ALLOCATORS, JointLoss, calibration_check
from toolchain.budget_providers import Measurer, Step
from toolchain.budget_timing import by_statistic, run_stats
from toolchain.budget_trial import (
    BRACKETED,
    CORRECTED,
    MET,
    NARROWEST,
    NEIGHBOUR,
    OVER,
    REFINED,
    UNREACHABLE,
    Trial,
    allocator_origin,
    outcome_of,
)
from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs
from toolchain.pruning import PruneResult

Measured = list[Trial]  # trials measured so far, in the order they were tried


# Allocators whose misses are corrected by local refinement from the first miss on (the toolchain's own). The
# baselines keep their allocation rule until measurements bracket the band and nothing measured-untried lies
# between the bracketing models; refinement then finishes their search too (it only makes them stronger).
REFINED_ALLOCATORS = ("lpnet", "knapsack")


def _closest_to_aim(config: BudgetConfig, budget_ms: float, measured: Measured) -> Trial:
    aim_ms = config.aim_ratio * budget_ms
    return min(measured, key=lambda t: abs(math.log(t.measured_ms / aim_ms)))


def refinement(problem: AllocationProblem, config: BudgetConfig, budget_ms: float,
                measured: Measured, bracketed: bool = False) -> dict[str, int] | None:
    """Widths for the next try, found next to the measured model closest to the aim instead of re-allocated.

    `measured` holds the earlier trials. Re-allocating from scratch
    for a rescaled target moves many groups at once, often by more than the hit band; here the predictor is
    calibrated at one measured point (measured / predicted there) and groups are stepped one at a time
    (`greedy_repair`: down by least importance per ms saved, then up by most importance per ms spent) until
    the calibrated prediction reaches `aim_ratio` x budget. None when that gives nothing new to measure.
    """
    if config.allocator not in REFINED_ALLOCATORS and not bracketed:
        return None
    closest = _closest_to_aim(config, budget_ms, measured)
    # The current problem's prediction (with `correct_predictor`, the problem's latency changes between tries)
    local_target_ms = config.aim_ratio * budget_ms * problem.predicted_ms(closest.widths) / closest.measured_ms
    narrowest = problem.narrowest()
    refined = (narrowest if local_target_ms < problem.predicted_ms(narrowest)
               else greedy_repair(problem, closest.widths, local_target_ms, fill=True))
    return None if any(refined == t.widths for t in measured) else refined


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
    below = [(t.measured_ms, t.widths) for t in measured if t.measured_ms < config.lower_ratio * budget_ms]
    above = [(t.measured_ms, t.widths) for t in measured if t.measured_ms > budget_ms]
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
    tried = [t.widths for t in measured]
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
    closest = _closest_to_aim(config, budget_ms, measured)
    widths = closest.widths
    allowed = {g.name: g.allowed() for g in problem.groups}

    def stepped(base: dict[str, int], name: str, step: int) -> dict[str, int] | None:
        index = allowed[name].index(base[name]) + step
        return {**base, name: allowed[name][index]} if 0 <= index < len(allowed[name]) else None

    singles = [c for name in problem.names for step in (1, -1) if (c := stepped(widths, name, step)) is not None]
    ups = [(name, c) for name in problem.names if (c := stepped(widths, name, 1)) is not None]
    pairs = [c for up, wider in ups for down in problem.names if down != up
             if (c := stepped(wider, down, -1)) is not None]
    tried = [t.widths for t in measured]
    candidates = [c for c in singles + pairs if c not in tried]
    closest_predictor_ms = problem.predicted_ms(widths)
    if not candidates or closest_predictor_ms <= 0:
        return None
    calibrated = [ms * closest.measured_ms / closest_predictor_ms for ms in problem.predicted_ms_many(candidates)]
    aim_ms = config.aim_ratio * budget_ms
    in_band = [i for i, ms in enumerate(calibrated) if config.lower_ratio * budget_ms <= ms <= budget_ms]
    if in_band:
        return candidates[min(in_band, key=lambda i: problem.loss(candidates[i]))]
    return candidates[min(range(len(candidates)), key=lambda i: abs(math.log(calibrated[i] / aim_ms)))]



# Extra timings, each after a pause (BudgetConfig.unreachable_pause_s), before the narrowest model measured over
# budget makes a budget unreachable.
UNREACHABLE_RETIMINGS = 2


class BudgetSearch:
    """The trials of one budget run and the internal target they are aimed at: `propose -> measure -> observe`.

    The internal target starts at `aim_ratio` x budget, converted to the predictor's scale by the ratio of the
    dense model's predicted to measured latency, and is rescaled by budget / measured after every miss (a
    geometric bisection once targets on both sides of the band are known). After the first miss the next
    widths come from the measurements (`between_measured`, `refinement`) when they have something new.

    With `config.correct_predictor`, every miss instead refits a correction of the predictor on all tries
    measured so far (`MeasuredCorrection`) and the allocator chooses again on the corrected predictor, aimed
    through the try closest to the aim; `between_measured` still takes over once tries bracket the band.

    >>> search = BudgetSearch(problem, config, budget_ms, dense_ms, build, measurer, x)          # doctest: +SKIP
    >>> while (trial := search.propose()) is not None:                                         # doctest: +SKIP
    ...     search.observe(search.measure(trial))
    """

    def __init__(self, problem: AllocationProblem, config: BudgetConfig, budget_ms: float, dense_ms: float,
                 build: Callable[[dict[str, int]], PruneResult], measurer: Measurer, example_input: ModelInputs,
                 joint_loss: JointLoss | None = None, step: Step = lambda _: None):
        """`build(widths)` prunes a copy of the dense model; `measurer` times it on the target; `joint_loss`
        (calibration loss of widths, given data) enables the calibration check of the allocator's proposal."""
        self.problem, self.config, self.budget_ms, self.dense_ms = problem, config, budget_ms, dense_ms
        self.build, self.measurer, self.example_input = build, measurer, example_input
        self.joint_loss, self.step = joint_loss, step
        self.base_problem = problem  # the predictor's own problem; `problem` is it corrected, once corrected
        self.scale = problem.predicted_ms(problem.dense()) / dense_ms  # predictor ms per measured ms
        self.narrowest = problem.narrowest()
        self.target_ms = config.aim_ratio * budget_ms * self.scale  # the internal target, predictor ms
        self.too_low_ms, self.too_high_ms = 0.0, float("inf")  # internal targets known to land below / above
        self.planned: tuple[dict[str, int], str] | None = None  # next widths, chosen from measurements, and how
        self.trials: list[Trial] = []
        self.done = False

    def propose(self) -> Trial | None:
        """The next trial, or None once one landed in the band or the iterations are spent."""
        if self.done or len(self.trials) >= self.config.max_iterations:
            return None
        widths, origin, check = self._choose()
        predictor_ms = self.problem.predicted_ms(widths)
        return Trial(widths, origin, aim_ms=self.target_ms / self.scale, predictor_ms=predictor_ms,
                     predicted_ms=predictor_ms / self.scale, calibration_check=check)

    def _choose(self) -> tuple[dict[str, int], str, dict | None]:
        config, problem = self.config, self.problem
        if self.planned is not None:
            widths, origin = self.planned
            self.step("trying widths between the models measured below and above the band" if origin == BRACKETED
                      else f"refining the widest model under budget ({config.allocator}) for "
                           f"{self.target_ms:.3f} predicted ms")
            return widths, origin, None
        if self.target_ms < problem.predicted_ms(self.narrowest):  # the current (maybe corrected) prediction
            self.step("the prediction says the budget is below the narrowest model: measuring that model")
            return dict(self.narrowest), NARROWEST, None
        correcting = config.correct_predictor and bool(self.trials)
        corrected = " (predictor corrected by the tries so far)" if correcting else ""
        self.step(f"allocating widths ({config.allocator}) for {self.target_ms:.3f} predicted ms{corrected}")
        widths, check = allocate(config.allocator, problem, self.target_ms), None
        if config.allocator in CHECKED_ALLOCATORS and self.joint_loss is not None:
            after = config.check_recovery_steps
            if after:
                self.step(f"checking the allocation against blends with the uniform one after {after} "
                          "distillation steps each")
            widths, check = calibration_check(problem, widths, self.target_ms, self.joint_loss,
                                              0 if after else config.refine_rounds)
            if after:
                check["scored_after_distillation_steps"] = after
        if any(widths == t.widths for t in self.trials):
            refined = refinement(problem, config, self.budget_ms, self.trials, bracketed=True) if correcting else None
            if refined is not None:
                self.step("the allocation was measured before: refining the model closest to the aim")
                return refined, REFINED, None
            untried = nearest_untried(problem, config, self.budget_ms, self.trials)
            if untried is not None:
                self.step("the allocation was measured before: trying its nearest untried neighbour")
                return untried, NEIGHBOUR, None
        origin = CORRECTED if correcting else allocator_origin(config.allocator)
        return widths, origin, check

    def measure(self, trial: Trial) -> Trial:
        """Build the trial's model and time it on the target; returns the trial, timed."""
        trial.result = self.build(trial.widths)
        self.step(f"measuring the pruned model (iteration {len(self.trials) + 1})")
        # Widths proposed again are timed again, and the lowest timing counts: other work on the machine only
        # ever adds time, so a repeat that runs faster shows the earlier timing was disturbed.
        self._time(trial)
        for earlier in self.trials:
            if earlier.widths == trial.widths and earlier.measured_ms < trial.measured_ms:
                trial.measured_ms, trial.run_stats = earlier.measured_ms, earlier.run_stats
        # Interference only adds time, and one disturbed timing must neither send the search the wrong way
        # (sweeps saw MobileNetV2 models time 0.28 and 0.32 ms where their neighbours timed 0.19) nor declare
        # a budget unreachable: a model measured over budget counts by the lower of two timings, and the
        # narrowest model, whose verdict ends the run, by timings seconds apart (a slow spell can outlast two
        # back to back: a sweep's ResNet-56 narrowest model timed 0.319 ms twice, then 0.238-0.241 ms).
        retimings = 1 + (UNREACHABLE_RETIMINGS if trial.widths == self.narrowest else 0)
        for retiming in range(retimings):
            if trial.measured_ms <= self.budget_ms:
                break
            if retiming:
                self.step("the narrowest model measured over budget: timing it again after a pause")
                time.sleep(self.config.unreachable_pause_s)
            else:
                self.step("the pruned model measured over budget: timing it again")
            self._time(trial)
        return trial

    def _time(self, trial: Trial) -> None:
        """Time the trial's model once; the lowest timing (by the budget's statistic) and its runs count."""
        timing = self.measurer(trial.result.model, self.example_input)
        ms = by_statistic(timing, self.config.budget_statistic)
        trial.timings_ms.append(ms)
        if trial.measured_ms is None or ms < trial.measured_ms:
            trial.measured_ms, trial.run_stats = ms, run_stats(timing)

    def observe(self, trial: Trial) -> None:
        """Judge a timed trial, keep it, and aim the next one; raises when the budget is unreachable."""
        budget_ms, config = self.budget_ms, self.config
        trial.outcome = outcome_of(trial.measured_ms, budget_ms, config.lower_ratio)
        self.trials.append(trial)
        if trial.widths == self.narrowest and trial.outcome == OVER:
            trial.outcome = UNREACHABLE
            raise ToolchainError(f"budget {budget_ms:.3f} ms is unreachable on this target: the narrowest allowed "
                                 f"model measures {trial.measured_ms:.3f} ms (dense {self.dense_ms:.3f} ms)")
        if trial.outcome == MET:
            self.done = True
            return
        if config.correct_predictor:
            self._correct()
            return
        # Rescale by the miss; once targets on both sides of the band are known, bisect between them
        # (rescaling alone oscillates when width steps move the latency by more than the band).
        if trial.outcome == OVER:
            self.too_high_ms = min(self.too_high_ms, self.target_ms)
        else:
            self.too_low_ms = max(self.too_low_ms, self.target_ms)
        rescaled_ms = self.target_ms * config.aim_ratio * budget_ms / trial.measured_ms
        self.target_ms = ((self.too_low_ms * self.too_high_ms) ** 0.5
                          if self.too_low_ms > 0 and self.too_high_ms < float("inf") else rescaled_ms)
        between = between_measured(self.problem, config, budget_ms, self.trials)
        bracketed = bracket(self.problem, config, budget_ms, self.trials) is not None
        refined = None if between is not None else refinement(self.problem, config, budget_ms, self.trials,
                                                              bracketed)
        self.planned = (between, BRACKETED) if between is not None else (refined, REFINED) if refined else None

    def _correct(self) -> None:
        """Refit the predictor's correction on every try, re-aim through the try closest to the aim, and plan the
        walk between tries once they bracket the band (else the allocator chooses again, on the corrected
        predictor)."""
        base, config = self.base_problem, self.config
        measured = [(base.vector(t.widths), t.measured_ms * self.scale) for t in self.trials]
        self.problem = replace(base, latency=MeasuredCorrection.fit(base.latency, base.vector(base.dense()), measured))
        closest = _closest_to_aim(config, self.budget_ms, self.trials)
        # The correction reproduces the tries only up to its ridge: calibrate what is left at the closest try.
        calibration = self.problem.predicted_ms(closest.widths) / closest.measured_ms
        self.target_ms = config.aim_ratio * self.budget_ms * calibration
        between = between_measured(self.problem, config, self.budget_ms, self.trials)
        self.planned = (between, BRACKETED) if between is not None else None

    def best(self) -> Trial:
        """The slowest trial within the budget (the most accuracy kept), or the fastest if none is."""
        within = [t for t in self.trials if t.measured_ms <= self.budget_ms]
        return (max(within, key=lambda t: t.measured_ms) if within
                else min(self.trials, key=lambda t: t.measured_ms))
