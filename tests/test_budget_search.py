"""The budget search as an object: trials proposed, measured and observed on a two-group problem, no model."""

from __future__ import annotations

import pytest
import torch

from toolchain.allocate import AllocationProblem, BudgetConfig, GroupChoice
from toolchain.budget_search import BudgetSearch
from toolchain.budget_trial import MET, OVER, UNDER, UNREACHABLE
from toolchain.errors import ToolchainError
from toolchain.pruning import PruneResult

GROUPS = (GroupChoice("a", 64, 8, 8), GroupChoice("b", 32, 8, 8))
COST_MS = torch.tensor([0.02, 0.005])  # predicted ms per channel of a and b


class Linear:
    differentiable = True

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        return 0.1 + widths @ COST_MS


def _search(target_ms, budget_ms: float, **config) -> tuple[BudgetSearch, list]:
    """A search whose 'models' are their widths, timed by `target_ms(widths)`; the widths timed, in order."""
    problem = AllocationProblem(GROUPS, {g.name: torch.linspace(1.0, 0.0, g.dense_width + 1) for g in GROUPS},
                                Linear())
    timed = []

    def measurer(widths, _example_input) -> float:
        timed.append(dict(widths))
        return target_ms(widths)

    def build(widths) -> PruneResult:
        return PruneResult(widths, dict(widths), {})

    config = BudgetConfig(budget_ms=budget_ms, allocator="knapsack", **config)
    dense_ms = target_ms({"a": 64, "b": 32})
    return BudgetSearch(problem, config, budget_ms, dense_ms, build, measurer, None), timed


def test_a_search_proposes_measures_and_observes_until_a_trial_lands_in_the_band():
    # the target is 30% slower than predicted, beyond the dense model's calibration (a larger fixed cost)
    search, timed = _search(lambda w: 0.5 + 1.3 * (w["a"] * 0.02 + w["b"] * 0.005), budget_ms=1.5)
    while (trial := search.propose()) is not None:
        assert trial.measured_ms is None and trial.outcome is None  # proposed, not yet timed
        search.observe(search.measure(trial))
    outcomes = [t.outcome for t in search.trials]
    assert outcomes[-1] == MET and all(o in (OVER, UNDER) for o in outcomes[:-1])
    # the allocator first; then a refinement next to the trial closest to the aim, then its nearest neighbour
    assert [t.origin for t in search.trials] == ["allocator:knapsack", "refined", "neighbour"]
    assert search.best() is search.trials[-1] and 0.9 * 1.5 <= search.best().measured_ms <= 1.5
    # each trial timed once, a trial over budget twice
    assert len(timed) == sum(1 + (t.outcome == OVER) for t in search.trials)
    assert [t.record()["measured_ms"] for t in search.trials] == [round(t.measured_ms, 4) for t in search.trials]


def test_the_narrowest_model_over_budget_ends_the_search_after_timings_paused_by_the_config():
    search, timed = _search(lambda w: 1.0 + w["a"] * 0.02 + w["b"] * 0.005, budget_ms=0.3, unreachable_pause_s=0.0)
    trial = search.propose()
    assert trial.origin == "narrowest"
    with pytest.raises(ToolchainError, match="unreachable"):
        search.observe(search.measure(trial))
    assert trial.outcome == UNREACHABLE and search.trials == [trial]
    assert len(timed) == 4 and len(trial.timings_ms) == 4  # the first timing, one at once, two after pauses


def test_the_trial_module_examples_run():
    import doctest

    import toolchain.budget_trial

    results = doctest.testmod(toolchain.budget_trial)
    assert results.failed == 0 and results.attempted >= 4


def _mis_rated_group_ms(widths) -> float:
    """The predictor (`Linear`) rates a's channels 5x too expensive and b's 6x too cheap."""
    return 0.1 + widths["a"] * 0.004 + widths["b"] * 0.03


def _run(search: BudgetSearch) -> BudgetSearch:
    while (trial := search.propose()) is not None:
        search.observe(search.measure(trial))
    return search


def test_correcting_the_predictor_by_the_tries_moves_the_cuts_to_the_group_whose_savings_are_real():
    plain = _run(_search(_mis_rated_group_ms, budget_ms=0.9)[0])
    corrected = _run(_search(_mis_rated_group_ms, budget_ms=0.9, correct_predictor=True)[0])
    for search in (plain, corrected):
        assert search.trials[-1].outcome == MET and search.best() is search.trials[-1]
    # both start from the same allocation: it cuts a, which the predictor over-rates, and misses
    assert plain.trials[0].widths == corrected.trials[0].widths and corrected.trials[0].outcome == OVER
    # corrected, the allocator chooses again and cuts b; plain, refinement keeps cutting a from the first try
    assert corrected.trials[1].origin == "corrected" and corrected.trials[1].widths["b"] < 32
    assert [t.origin for t in plain.trials[1:3]] == ["refined", "refined"]
    assert [t.widths["b"] for t in plain.trials[:3]] == [32, 32, 32]
    # the corrected search lands in the band in fewer tries, keeping more (lower estimated loss)
    assert len(corrected.trials) < len(plain.trials)
    problem = corrected.base_problem
    assert problem.loss(corrected.best().widths) < problem.loss(plain.best().widths)
    # the correction only ever makes cuts save less than predicted (an allocator exploits any cut it makes look
    # cheaper), and it moves the first try's prediction, which was too low, more than halfway to its measurement
    for trial in corrected.trials:
        assert corrected.problem.predicted_ms(trial.widths) >= problem.predicted_ms(trial.widths)
    first = corrected.trials[0]
    before = problem.predicted_ms(first.widths) / corrected.scale
    after = corrected.problem.predicted_ms(first.widths) / corrected.scale
    assert before < after < first.measured_ms and first.measured_ms - after < 0.5 * (first.measured_ms - before)


def test_the_correction_module_examples_run():
    import doctest

    import toolchain.allocate.correction

    results = doctest.testmod(toolchain.allocate.correction)
    assert results.failed == 0 and results.attempted >= 4
