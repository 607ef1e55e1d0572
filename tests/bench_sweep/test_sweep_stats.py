"""Seed statistics of the budget sweep: t-intervals, curve interpolation, the common range, areas between curves."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from benchmarks.sweep_stats import area_between, common_range, curves_of, interpolate, point_table, t_interval


def test_t_interval_matches_the_student_t_formula():
    result = t_interval([0.90, 0.92, 0.97])
    sd = stats.tstd([0.90, 0.92, 0.97])
    assert result["mean"] == pytest.approx(0.93)
    assert result["half_width"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3), abs=1e-6)
    assert t_interval([0.5]) == {"mean": 0.5, "half_width": None, "n": 1}
    assert t_interval([None])["n"] == 0


def test_interpolate_sorts_points_and_averages_ties():
    import numpy as np

    curve = [(2.0, 0.8), (1.0, 0.4), (1.0, 0.6)]
    assert interpolate(curve, np.array([1.0, 1.5, 2.0])).tolist() == pytest.approx([0.5, 0.65, 0.8])


def test_common_range_is_what_every_curve_covers():
    curves = {"a": {1: [(1.0, 0.1), (3.0, 0.9)], 2: [(1.5, 0.1), (4.0, 0.9)]}, "b": {1: [(0.5, 0.1), (2.5, 0.9)]}}
    assert common_range(curves) == (1.5, 2.5)
    assert common_range({"a": {1: [(1.0, 0.1), (2.0, 0.2)]}, "b": {1: [(3.0, 0.1), (4.0, 0.2)]}}) is None


def test_area_between_is_the_mean_difference_at_equal_latency_paired_by_seed():
    # a is 0.1 above b at seed 1 and 0.3 above at seed 2, over the same latencies
    curves = {"a": {1: [(1.0, 0.6), (2.0, 0.9)], 2: [(1.0, 0.8), (2.0, 1.0)]},
              "b": {1: [(1.0, 0.5), (2.0, 0.8)], 2: [(1.0, 0.5), (2.0, 0.7)]}}
    result = area_between(curves, "a", "b")
    assert result["per_seed"] == {1: pytest.approx(0.1), 2: pytest.approx(0.3)}
    assert result["mean"] == pytest.approx(0.2)
    assert result["half_width"] == pytest.approx(stats.t.ppf(0.975, 1) * stats.tstd([0.1, 0.3]) / math.sqrt(2))
    assert area_between(curves, "b", "a")["mean"] == pytest.approx(-0.2)


def test_area_between_compares_curves_measured_at_different_latencies():
    # b's points sit at other latencies on the same line as a: no difference over the common range
    curves = {"a": {1: [(1.0, 0.5), (3.0, 0.9)]}, "b": {1: [(1.5, 0.6), (2.0, 0.7), (2.5, 0.8)]}}
    assert area_between(curves, "a", "b")["mean"] == pytest.approx(0.0, abs=1e-9)
    assert area_between(curves, "a", "b")["range_ms"] == [1.5, 2.5]


def test_rows_become_curves_and_points_without_errored_rows():
    rows = [{"method": "m", "seed": s, "budget_ratio": 0.5, "measured_latency_ms": 1.0 + s / 10,
             "acc": 0.5 + s / 10, "error": None} for s in (1, 2, 3)]
    rows.append({"method": "m", "seed": 4, "budget_ratio": 0.5, "error": "unreachable"})
    assert sorted(curves_of(rows, "acc")["m"]) == [1, 2, 3]
    point = point_table(rows, "acc")[("m", 0.5)]
    assert point["seeds"] == [1, 2, 3]
    assert point["accuracy"]["mean"] == pytest.approx(0.7)
    assert point["measured_ms"]["n"] == 3
