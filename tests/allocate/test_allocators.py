"""Every allocator meets a budget on a synthetic latency model; floors hold; unreachable budgets fail clearly."""

from __future__ import annotations

import pytest
import torch

from tests.allocate.synthetic import GROUPS, SyntheticLatency, synthetic_macs, synthetic_problem
from toolchain.allocate import BudgetConfig, allocate, build_problem, greedy_repair, list_allocators, loss_curves
from toolchain.errors import ToolchainError

BUDGET_FRACTIONS = (0.4, 0.6, 0.85)


@pytest.mark.parametrize("allocator", ["lpnet", "knapsack", "uniform"])
@pytest.mark.parametrize("fraction", BUDGET_FRACTIONS)
def test_latency_aware_allocators_meet_the_budget(allocator, fraction):
    problem = synthetic_problem(sensitivity={"stem": 1.0, "block1": 0.2, "block2": 0.5, "head": 0.1})
    dense_ms = problem.predicted_ms(problem.dense())
    budget_ms = fraction * dense_ms
    widths = allocate(allocator, problem, budget_ms)
    predicted_ms = problem.predicted_ms(widths)
    assert predicted_ms <= budget_ms
    problem.check_widths(widths)
    if allocator != "uniform":  # the greedy fill leaves no allowed step up that still fits
        for g in problem.groups:
            allowed = g.allowed()
            if widths[g.name] < allowed[-1]:
                up = {**widths, g.name: allowed[allowed.index(widths[g.name]) + 1]}
                assert problem.predicted_ms(up) > budget_ms


def test_importance_aware_allocators_lose_no_more_than_uniform():
    problem = synthetic_problem(sensitivity={"stem": 1.0, "block1": 0.05, "block2": 0.5, "head": 0.02})
    budget_ms = 0.6 * problem.predicted_ms(problem.dense())
    uniform_loss = problem.loss(allocate("uniform", problem, budget_ms))
    for allocator in ("lpnet", "knapsack"):
        assert problem.loss(allocate(allocator, problem, budget_ms)) <= uniform_loss + 1e-9


def test_floors_are_multiples_and_never_zero():
    problem = synthetic_problem(sensitivity={"stem": 1.0, "block1": 0.0, "block2": 0.0, "head": 0.0},
                                min_keep_ratio=0.1, sensitive_keep_ratio=0.5)
    narrowest = problem.narrowest()
    assert narrowest["stem"] == 8  # the most sensitive group keeps half of 16
    assert all(w >= 8 and w % 8 == 0 for w in narrowest.values())
    widths = allocate("knapsack", problem, problem.predicted_ms(narrowest) * 1.01)
    assert all(widths[g.name] >= narrowest[g.name] for g in GROUPS)


def test_macs_baseline_hits_the_mac_fraction():
    problem = synthetic_problem(macs=synthetic_macs)
    dense_ms = problem.predicted_ms(problem.dense())
    widths = allocate("macs", problem, 0.5 * dense_ms)
    assert synthetic_macs(widths) <= 0.5 * synthetic_macs(problem.dense())


def test_unreachable_budget_names_the_smallest_latency():
    problem = synthetic_problem()
    smallest_ms = problem.predicted_ms(problem.narrowest())
    with pytest.raises(ToolchainError, match=rf"unreachable.*{smallest_ms:.3f} ms"):
        allocate("lpnet", problem, 0.5 * smallest_ms)


def test_unknown_allocator_lists_the_valid_ones():
    with pytest.raises(ToolchainError, match="valid: knapsack, lpnet, macs, uniform"):
        allocate("genetic", synthetic_problem(), 10.0)
    assert list_allocators() == ["knapsack", "lpnet", "macs", "uniform"]


def test_lpnet_refuses_a_non_differentiable_latency_model():
    class Table(SyntheticLatency):
        differentiable = False

    problem = build_problem(GROUPS, {g.name: torch.ones(g.width) for g in GROUPS}, Table())
    with pytest.raises(ToolchainError, match="differentiable"):
        allocate("lpnet", problem, problem.predicted_ms(problem.dense()) * 0.7)


def test_greedy_repair_moves_down_then_fills():
    problem = synthetic_problem()
    budget_ms = 0.7 * problem.predicted_ms(problem.dense())
    repaired = greedy_repair(problem, problem.dense(), budget_ms)
    assert problem.predicted_ms(repaired) <= budget_ms


def test_loss_curves_start_at_the_probe_sensitivity():
    curves = loss_curves({"g": torch.tensor([4.0, 3.0, 2.0, 1.0])}, {"g": 4}, {"g": 0.7}, probe_keep_ratio=0.5)
    assert float(curves["g"][2]) == pytest.approx(0.7)
    assert float(curves["g"][4]) == pytest.approx(0.0, abs=1e-6)
    assert torch.all(curves["g"][:-1] >= curves["g"][1:])


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of"),
    ({"budget_ms": 1.0, "budget_ratio": 0.5}, "exactly one of"),
    ({"budget_ms": -1.0}, "positive"),
    ({"budget_ratio": 1.5}, r"\(0, 1\]"),
])
def test_budget_config_rejects_bad_input(kwargs, message):
    with pytest.raises(ToolchainError, match=message):
        BudgetConfig(**kwargs)
