"""Seed statistics for the budget sweep: per-point means with Student-t intervals, and accuracy-vs-measured-
latency curves compared by the area between them over their common latency range.

A method's curve for one seed is its (measured ms, accuracy) points over the budgets. Two methods are compared
seed by seed (same seed = same data order and calibration subset): both curves are interpolated linearly on a
grid over the latency range every curve covers, and the area between them is divided by the range's width, so
it reads as the mean accuracy difference at equal measured latency. The interval is over seeds.

>>> curves = {"a": {1: [(1.0, 0.5), (2.0, 0.9)]}, "b": {1: [(1.0, 0.4), (2.0, 0.8)]}}
>>> round(area_between(curves, "a", "b")["mean"], 3)
0.1
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

GRID_POINTS = 101
Curve = list[tuple[float, float]]  # (measured ms, accuracy) points, any order


def t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t half-width over independent runs (half-width None for fewer than two).

    >>> bool(t_interval([1.0, 2.0, 3.0])["half_width"] == round(stats.t.ppf(0.975, 2) / math.sqrt(3), 6))
    True
    """
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "half_width": None, "n": 0}
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": round(mean, 6), "half_width": None, "n": 1}
    sem = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sem
    return {"mean": round(mean, 6), "half_width": round(half, 6), "n": len(values)}


def interpolate(curve: Curve, grid: np.ndarray) -> np.ndarray:
    """Accuracy of `curve` at the grid's latencies (linear between points; points at one latency averaged)."""
    by_ms: dict[float, list[float]] = {}
    for ms, acc in curve:
        by_ms.setdefault(float(ms), []).append(float(acc))
    xs = np.array(sorted(by_ms))
    ys = np.array([np.mean(by_ms[x]) for x in xs])
    return np.interp(grid, xs, ys)


def common_range(curves: dict[str, dict[int, Curve]]) -> tuple[float, float] | None:
    """The measured-latency range every method's every seed covers (None if they do not overlap)."""
    lows = [min(ms for ms, _ in c) for by_seed in curves.values() for c in by_seed.values() if c]
    highs = [max(ms for ms, _ in c) for by_seed in curves.values() for c in by_seed.values() if c]
    if not lows or max(lows) >= min(highs):
        return None
    return max(lows), min(highs)


def area_between(curves: dict[str, dict[int, Curve]], method: str, baseline: str,
                 span: tuple[float, float] | None = None) -> dict:
    """Mean accuracy difference `method` - `baseline` over `span` (default: the common range of all curves),
    per shared seed, with its t-interval over seeds; positive: `method` keeps more accuracy."""
    span = span or common_range(curves)
    seeds = sorted(set(curves[method]) & set(curves[baseline]))
    if span is None or not seeds:
        return {"mean": None, "half_width": None, "n": 0, "per_seed": {}, "range_ms": span}
    grid = np.linspace(span[0], span[1], GRID_POINTS)
    per_seed = {s: float(np.mean(interpolate(curves[method][s], grid) - interpolate(curves[baseline][s], grid)))
                for s in seeds}
    return {**t_interval(list(per_seed.values())), "per_seed": {s: round(v, 6) for s, v in per_seed.items()},
            "range_ms": [round(span[0], 4), round(span[1], 4)]}


def curves_of(rows: list[dict], accuracy_field: str) -> dict[str, dict[int, Curve]]:
    """{method: {seed: [(measured ms, accuracy), ...]}} from sweep rows without errors."""
    curves: dict[str, dict[int, Curve]] = {}
    for row in rows:
        if row.get("error") is None and row.get(accuracy_field) is not None:
            curves.setdefault(row["method"], {}).setdefault(row["seed"], []).append(
                (row["measured_latency_ms"], row[accuracy_field]))
    return curves


def point_table(rows: list[dict], accuracy_field: str) -> dict[tuple[str, float], dict]:
    """Per (method, budget ratio): measured ms and accuracy, each as mean and t-interval over seeds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        if row.get("error") is None:
            groups.setdefault((row["method"], row["budget_ratio"]), []).append(row)
    return {key: {"measured_ms": t_interval([r["measured_latency_ms"] for r in group]),
                  "accuracy": t_interval([r.get(accuracy_field) for r in group]),
                  "seeds": sorted(r["seed"] for r in group)} for key, group in groups.items()}


def rank_agreement(rows: list[dict], before: str, after: str) -> dict[float, dict]:
    """Per budget ratio: Spearman's rank correlation between two accuracies of the same points (every method and
    seed). The allocators optimise an estimate of the accuracy *before* recovery; a low correlation with the
    accuracy *after* it says that objective cannot rank what is shipped.

    >>> rows = [{"budget_ratio": 0.5, "a": x, "b": y} for x, y in [(0.1, 0.2), (0.2, 0.1), (0.3, 0.4), (0.4, 0.3)]]
    >>> rank_agreement(rows, "a", "b")[0.5]["rho"]
    0.6
    """
    by_budget: dict[float, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("error") is None and row.get(before) is not None and row.get(after) is not None:
            by_budget.setdefault(row["budget_ratio"], []).append((row[before], row[after]))
    result = {}
    for budget, pairs in sorted(by_budget.items()):
        if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
            continue  # no ranking to compare (too few points, or one side constant)
        rho, p_value = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
        result[budget] = {"rho": round(float(rho), 3), "p_value": round(float(p_value), 4), "points": len(pairs)}
    return result
