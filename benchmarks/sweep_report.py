"""Tables and the plot of the seeded budget sweep, every figure read from its rows (`sweep_stats` does the maths).

Two accuracies per point: after BatchNorm re-calibration only, and after the fixed-step distillation every
method gets. `ACCURACIES` names them; the summary holds both.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.sweep_stats import area_between, common_range, curves_of, point_table, rank_agreement, t_interval

ACCURACIES = {"accuracy_after_bn_recalibration": "BN re-calibration only",
              "accuracy_finetuned": "after fine-tuning"}
# Rows of the area tables: the latency-aware allocators and their variants (benchmarks.budget_sweep.VARIANTS)
TOOLCHAIN = tuple(f"{a}{v}" for v in ("", "-corrected", "-rchecked", "-selected") for a in ("lpnet", "knapsack"))


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """Per accuracy: the per-point table, the common latency range and each (toolchain method, baseline) area."""
    measured = [r for r in rows if r.get("error") is None]
    summary = {"rows": len(rows), "errors": [f"{r['method']} s{r['seed']} {r['budget_ratio']}: {r['error']}"
                                             for r in rows if r.get("error")],
               "seeds": sorted({r["seed"] for r in rows}),
               "dense_latency_ms": t_interval(list({r["seed"]: r["dense_latency_ms"] for r in measured}.values())),
               "dense_accuracy": next((r["dense_accuracy"] for r in measured if r.get("dense_accuracy")), None),
               "rank_agreement": {f"{b:g}": v for b, v in rank_agreement(measured, *ACCURACIES).items()}}
    for field in ACCURACIES:
        curves = curves_of(measured, field)
        if not curves:
            continue
        span = common_range(curves)
        table = point_table(measured, field)
        summary[field] = {
            "range_ms": span,
            "points": {f"{m}@{b:g}": v for (m, b), v in sorted(table.items())},
            "areas": {f"{m} - {b}": area_between(curves, m, b, span) for m in TOOLCHAIN if m in curves
                      for b in methods if b in curves and b != m},
            "mean_over_range": {m: area_between({**curves, "zero": _zero(curves[m])}, m, "zero", span)
                                for m in methods if m in curves} if span else {}}
    return summary


def _zero(by_seed: dict) -> dict:
    """A curve of accuracy 0 at every seed, so `area_between(m, zero)` is m's mean accuracy over the range."""
    return {s: [(ms, 0.0) for ms, _ in c] for s, c in by_seed.items()}


def _pm(interval: dict, scale: float = 1.0, digits: int = 3) -> str:
    if interval.get("mean") is None:
        return "-"
    text = f"{interval['mean'] * scale:.{digits}f}"
    return text + (f" ± {interval['half_width'] * scale:.{digits}f}" if interval.get("half_width") is not None else "")


def markdown(report: dict) -> str:
    """BENCHMARKS.md tables: per model and accuracy, the points (mean ± 95 % t-interval over seeds) and the areas
    between curves (mean accuracy difference at equal measured latency, points of %)."""
    lines = []
    for name, model in report["models"].items():
        s = model["summary"]
        lines += ["", f"**{name}** ({'x'.join(map(str, model['input_shape']))}): dense {_pm(s['dense_latency_ms'])} ms "
                  f"(min of timed runs, thread-CPU; mean ± t-interval over the seeds' dense timings), dense accuracy "
                  f"{s['dense_accuracy']}, seeds {s['seeds']}, {s['rows']} rows, {len(s['errors'])} errors"]
        methods = model["methods"]
        for field, label in ACCURACIES.items():
            if field not in s:
                continue
            part = s[field]
            budgets = sorted({float(k.split("@")[1]) for k in part["points"]})
            lines += ["", f"*{name}, {label}*: measured ms / test accuracy, mean ± 95 % t-interval over seeds", "",
                      "| budget | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
            for b in budgets:
                cells = []
                for m in methods:
                    p = part["points"].get(f"{m}@{b:g}")
                    cells.append("-" if p is None else f"{_pm(p['measured_ms'])} / {_pm(p['accuracy'])}"
                                 + ("" if len(p["seeds"]) == len(s["seeds"]) else f" (n={len(p['seeds'])})"))
                lines.append(f"| {b:g} | " + " | ".join(cells) + " |")
            if part["range_ms"] is None:
                lines += ["", "(the methods' measured-latency ranges do not overlap: no areas)"]
                continue
            low, high = part["range_ms"]
            lines += ["", f"*{name}, {label}*: mean accuracy over the common measured range {low:.3f}–{high:.3f} ms, "
                      "and area between curves (row minus column) per ms of range, in points of %, mean ± 95 % "
                      "t-interval over paired seeds", "",
                      "| method | mean acc over range | " + " | ".join(f"− {b}" for b in methods) + " |",
                      "|---" * (len(methods) + 2) + "|"]
            for m in methods:
                mean = part["mean_over_range"].get(m, {})
                cells = [(_pm(part["areas"][f"{m} - {b}"], 100, 1) if f"{m} - {b}" in part["areas"] else "")
                         for b in methods]
                lines.append(f"| {m} | {_pm(mean, 100, 1)} | " + " | ".join(cells) + " |")
        agreement = s.get("rank_agreement") or {}
        if agreement:
            lines += ["", f"*{name}*: does the accuracy before fine-tuning (what the allocators' loss estimates aim "
                      "at) rank the points as the accuracy after it does? Spearman ρ over every method and seed, "
                      "per budget: " + "; ".join(f"{b}: ρ = {v['rho']:.2f} (p = {v['p_value']:.3f}, "
                                                  f"{v['points']} points)" for b, v in agreement.items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Accuracy against measured latency, mean ± t-interval over seeds on both axes, one panel per model and
    accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = list(ACCURACIES)
    names = list(report["models"])
    fig, axes = plt.subplots(len(fields), len(names), figsize=(6 * len(names), 4.2 * len(fields)), squeeze=False)
    for column, name in enumerate(names):
        methods = report["models"][name]["methods"]
        for line, field in enumerate(fields):
            ax, part = axes[line][column], report["models"][name].get("summary", {}).get(field)
            if part is None:
                ax.set_visible(False)
                continue
            for m in methods:
                points = sorted(((p["measured_ms"], p["accuracy"]) for k, p in part["points"].items()
                                 if k.split("@")[0] == m and p["accuracy"]["mean"] is not None),
                                key=lambda p: p[0]["mean"])
                if not points:
                    continue
                ax.errorbar([p[0]["mean"] for p in points], [p[1]["mean"] for p in points],
                            xerr=[p[0]["half_width"] or 0 for p in points],
                            yerr=[p[1]["half_width"] or 0 for p in points], marker="o", ms=3, capsize=2,
                            ls="-" if m in TOOLCHAIN else "--", label=m)
            if part["range_ms"]:
                ax.axvspan(*part["range_ms"], color="grey", alpha=0.1)
            ax.set_title(f"{name}: {ACCURACIES[field]}")
            ax.set_xlabel("measured latency (ms, min of timed runs, thread-CPU, cpu/onnxruntime 1 thread)")
            ax.set_ylabel("test accuracy")
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
