"""The report's figures: matplotlib (Agg) to PNG bytes, deterministic (no timestamps in the files).

Each function plots only the values it is given; the caller leaves out points with missing values and says so.

Example:
    >>> png = predicted_vs_measured([("lpnet", [1.0, 2.0], [1.1, 1.9])], "predictor quality")
    >>> png[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

_DPI = 100
_MARKERS = "osD^v<>Ppx*h"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (lower latency and higher accuracy).

    >>> pareto_front([(1, 0.5), (2, 0.9), (3, 0.8)])
    [(1, 0.5), (2, 0.9)]
    """
    front, best = [], -math.inf
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


def sweep_pareto(series: dict[str, list[tuple[float, float]]], budgets: Sequence[float], model: str = "") -> bytes:
    """Accuracy vs measured latency, one colour per series (allocator / criterion), its Pareto front joined."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, (label, points) in enumerate(sorted(series.items())):
        xs, ys = zip(*points)
        scatter = axis.scatter(xs, ys, s=24, marker=_MARKERS[index % len(_MARKERS)], label=label, alpha=0.8)
        front = pareto_front(points)
        axis.plot([p[0] for p in front], [p[1] for p in front], "-", color=scatter.get_facecolor()[0], lw=1.2)
    for budget in sorted(set(budgets)):
        axis.axvline(budget, color="grey", lw=0.6, ls=":")
    prefix = f"{model.rsplit('/', 1)[-1]}: " if model else ""  # a factory path is long; its file:function says enough
    axis.set(xlabel="measured latency (ms)", ylabel="accuracy (after recovery)",
             title=f"{prefix}accuracy vs measured latency\n(lines: Pareto front; dotted: budgets)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _png(figure)


def predicted_vs_measured(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str) -> bytes:
    """Predicted against measured latency with the y = x line and the ±10% band."""
    figure, axis = plt.subplots(figsize=(5.2, 4.6))
    values = [v for _, measured, predicted in series for v in (*measured, *predicted)]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low or high or 1.0)
    line = [max(low - pad, 0.0), high + pad]
    axis.fill_between(line, [v * 0.9 for v in line], [v * 1.1 for v in line], color="grey", alpha=0.2,
                      label="±10% of measured")
    axis.plot(line, line, "k-", lw=0.8, label="predicted = measured")
    for index, (label, measured, predicted) in enumerate(series):
        axis.scatter(measured, predicted, s=14, marker=_MARKERS[index % len(_MARKERS)], label=label, alpha=0.8)
    axis.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title, xlim=line, ylim=line)
    axis.legend(fontsize=7, loc="upper left")
    axis.grid(alpha=0.3)
    return _png(figure)


def kept_widths(groups: Sequence[str], kept: Sequence[int], dense: Sequence[int], title: str) -> bytes:
    """Horizontal bars: dense width (light) and kept width (dark) per channel group."""
    height = max(2.5, 0.28 * len(groups) + 1.2)
    figure, axis = plt.subplots(figsize=(7, height))
    rows = range(len(groups))
    axis.barh(rows, dense, color="#cfd8e3", label="dense width")
    axis.barh(rows, kept, color="#2b6cb0", label="kept width")
    for row, (k, d) in enumerate(zip(kept, dense)):
        axis.text(d, row, f" {k}/{d}", va="center", fontsize=7)
    axis.set_yticks(list(rows), groups, fontsize=7)
    axis.invert_yaxis()
    axis.set(xlabel="channels", title=title)
    axis.set_xlim(0, max(dense) * 1.18)
    axis.legend(fontsize=8, loc="lower right")
    return _png(figure)


def layer_latency(layers: Sequence[str], before_ms: Sequence[float | None], after_ms: Sequence[float | None],
                  title: str) -> bytes:
    """Per-layer latency before and after pruning; a missing value is drawn as no bar and marked 'missing'."""
    height = max(2.5, 0.3 * len(layers) + 1.2)
    figure, axis = plt.subplots(figsize=(7, height))
    rows = list(range(len(layers)))
    for offset, values, label, colour in ((-0.2, before_ms, "dense (before)", "#a0aec0"),
                                          (0.2, after_ms, "pruned (after)", "#2b6cb0")):
        axis.barh([r + offset for r in rows], [v or 0.0 for v in values], height=0.4, color=colour, label=label)
        for row, value in zip(rows, values):
            if value is None:
                axis.text(0, row + offset, " missing", va="center", fontsize=6, color="#c53030")
    axis.set_yticks(rows, layers, fontsize=7)
    axis.invert_yaxis()
    axis.set(xlabel="latency of the layer measured alone (ms)", title=title)
    axis.legend(fontsize=8, loc="lower right")
    return _png(figure)


def kernel_speedup(panels: dict[str, dict[str, list[tuple[float, float]]]],
                   ideal: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes:
    """Speedup over dense vs sparsity, one panel per device. Series are keyed "pattern (backend)": dots per
    layer, a line through the geometric mean per sparsity; the ideal speedup of each pattern is drawn with
    the pattern's marker, hollow, on a dashed black line."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.4), squeeze=False)
    for axis, (device, series) in zip(axes.flat, sorted(panels.items())):
        patterns = sorted({label.split(" (")[0] for label in series} | set(ideal.get(device, {})))
        marker_of = {p: _MARKERS[i % len(_MARKERS)] for i, p in enumerate(patterns)}
        for label, points in sorted(series.items()):
            marker = marker_of[label.split(" (")[0]]
            dots = axis.scatter(*zip(*points), s=12, marker=marker, alpha=0.45)
            by_sparsity: dict[float, list[float]] = {}
            for sparsity, speedup in points:
                by_sparsity.setdefault(sparsity, []).append(speedup)
            means = sorted((s, math.exp(sum(map(math.log, v)) / len(v))) for s, v in by_sparsity.items())
            axis.plot(*zip(*means), marker=marker, color=dots.get_facecolor()[0], label=f"{label}, geo-mean")
        for index, (pattern, points) in enumerate(sorted(ideal.get(device, {}).items())):
            axis.plot(*zip(*sorted(set(points))), "--", marker=marker_of[pattern], mfc="none", color="black",
                      lw=0.8, alpha=0.6, label="ideal (hollow markers, dashed)" if index == 0 else None)
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set(xlabel="sparsity", ylabel="speedup over dense (x, log scale)", title=device)
        axis.set_yscale("log", base=2)
        axis.legend(fontsize=6)
        axis.grid(alpha=0.3)
    return _png(figure)
