"""The result sections: budget sweep, predictor quality, kernel benchmarks and deploy bundles.

Each takes the parsed inputs and returns a `Section`; a figure is drawn only from values the inputs contain,
and every value left out is counted in a note. Predicted numbers are always labelled predicted.

Example:
    >>> section = sweep_section(inputs, labels)
    >>> [type(b).__name__ for b in section.blocks][:2]
    ['Paragraph', 'Figure']
"""

from __future__ import annotations

import math
from collections import defaultdict

from toolchain.manifest import BUDGET_BAND_LOW
from toolchain.report import plots
from toolchain.report.document import MISSING, Figure, Missing, Paragraph, Section, Table, cell
from toolchain.report.provenance import FingerprintLabels
from toolchain.report.readers import RunInputs
from toolchain.report.records import ManifestRecord, SweepPoint, manifest_point, number


def _series_name(point: SweepPoint) -> str:
    return f"{point.allocator or 'allocator missing'} / {point.criterion or 'criterion missing'}"


def _ms(value: float | None) -> str:
    return cell(value, "{:.3f} ms")


def _pct(value: float | None) -> str:
    return cell(value, "{:.1%}")


def sweep_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    points = inputs.sweep_points
    title = "Latency-budget sweep"
    origin = "sweep result"
    if not points:  # no sweep file: the pruned folders / bundles built for a budget are the points
        points = tuple(p for p in map(manifest_point, inputs.manifests) if p is not None)
        origin = "manifest built for a latency budget (no sweep result file was found)"
    if not points:
        return Section("sweep", title, (Missing("budget sweep results", "no sweep rows (JSON or CSV with a budget "
                                                "column) under the given folders; run `make sweep`"),))
    blocks: list = [Paragraph(f"{len(points)} point(s), each from a {origin}, read from "
                              f"{len({p.source for p in points})} file(s). Accuracy is after recovery; latencies "
                              "are measured on the target unless labelled predicted.")]
    by_model: dict[str, list[SweepPoint]] = defaultdict(list)
    for p in points:  # one figure per model: latencies of different models do not share an axis
        by_model[p.model or "model not recorded"].append(p)
    drawn = 0
    for index, (model, model_points) in enumerate(sorted(by_model.items())):
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for p in model_points:
            if p.measured_latency_ms is not None and p.accuracy is not None:
                series[_series_name(p)].append((p.measured_latency_ms, p.accuracy))
        if not series:
            continue
        drawn += sum(map(len, series.values()))
        budgets = [p.budget_ms for p in model_points if p.budget_ms is not None]
        name = "sweep-pareto.png" if index == 0 else f"sweep-pareto-{index}.png"
        blocks.append(Figure(name, plots.sweep_pareto(series, budgets, model),
                             f"accuracy against measured latency per allocator and criterion, {model}",
                             f"{model}: accuracy vs measured latency per allocator / criterion, Pareto fronts joined."))
    left_out = len(points) - drawn
    if drawn and left_out:
        blocks.append(Paragraph(f"{left_out} point(s) without a measured latency or accuracy are not drawn."))
    if not drawn:
        blocks.append(Missing("accuracy vs measured latency plot", "no sweep point has both a measured latency "
                                                                   "and an accuracy"))
    groups: dict[str, list[SweepPoint]] = defaultdict(list)
    for p in points:
        groups[_series_name(p)].append(p)
    hit_rows = []
    for name, group in sorted(groups.items()):
        judged = [p.hit_budget for p in group if p.hit_budget is not None]
        hit_rows.append((name, str(len(group)), str(len(judged)), str(sum(judged)),
                         _pct(sum(judged) / len(judged)) if judged else MISSING))
    blocks.append(Table(("allocator / criterion", "points", "with budget and measured latency", "in band",
                         "budget hit rate"), tuple(hit_rows),
                        f"Budget hit: measured latency within [{BUDGET_BAND_LOW:.2f}, 1.00] x budget. Points "
                        "without a measured "
                        "latency are not counted as hits or misses."))
    pairs: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for p in points:
        if p.measured_latency_ms is not None and p.predicted_latency_ms is not None:
            pairs[_series_name(p)][0].append(p.measured_latency_ms)
            pairs[_series_name(p)][1].append(p.predicted_latency_ms)
    if pairs:
        blocks.append(Figure("sweep-predicted-vs-measured.png", plots.predicted_vs_measured(
            [(name, m, pr) for name, (m, pr) in sorted(pairs.items())], "Sweep points: predicted vs measured"),
            "predicted against measured latency of every sweep point",
            "Latency the allocator predicted for each sweep point against the latency measured after shrinking."))
    else:
        blocks.append(Missing("predicted vs measured per sweep point", "no sweep point has both latencies"))
    stages = sorted({s for p in points for s in p.stage_wall_s})
    rows = tuple((_series_name(p), _ms(p.budget_ms), _ms(p.predicted_latency_ms), _ms(p.measured_latency_ms),
                  cell({True: "yes", False: "no"}.get(p.hit_budget)), _pct(p.accuracy_before_recovery),
                  _pct(p.accuracy), cell(p.macs, "{:,.0f}"), cell(p.params, "{:,.0f}"),
                  *(cell(p.stage_wall_s.get(s), "{:.1f} s") for s in stages), labels.source(p.source, p.fingerprint_id))
                 for p in sorted(points, key=lambda p: (_series_name(p), p.budget_ms or math.inf)))
    blocks.append(Table(("allocator / criterion", "budget", "predicted latency (predicted)", "measured latency",
                         f"in [{BUDGET_BAND_LOW:g}, 1] x budget", "accuracy before recovery", "accuracy after recovery",
                         "MACs", "params",
                         *(f"{s} wall time" for s in stages), "source"), rows, "Every sweep point."))
    return Section("sweep", title, tuple(blocks))


def predictor_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    title = "Latency predictor quality"
    scores = [s for b in inputs.predictor_benchmarks for s in b.scores]
    if not scores:
        return Section("predictors", title, (Missing("latency predictor benchmark", "no latency-*.json from "
                                                     "benchmarks/latency_predictor.py; run `make bench-latency`"),))
    rows = tuple((s.model, s.predictor, s.scope, cell(s.n, "{:d}"), cell(s.mape_pct, "{:.2f}%"), _pct(s.within_5pct),
                  _pct(s.within_10pct), cell(s.spearman, "{:.3f}"), labels.source(s.source, s.fingerprint_id))
                 for s in scores)
    blocks: list = [Paragraph("Each predictor's predicted latency compared with the measured latency of "
                              "configurations it was not fitted on (held out), or of an architecture it never saw."),
                    Table(("model", "predictor", "tested on", "configurations", "MAPE", "within ±5%",
                           "within ±10%", "Spearman", "source"), rows)]
    with_pairs = [s for s in scores if s.measured_ms]
    if with_pairs:
        by_model: dict[str, list] = defaultdict(list)
        for s in with_pairs:
            by_model[f"{s.model} ({s.scope})"].append((s.predictor, s.measured_ms, s.predicted_ms))
        for index, (model, series) in enumerate(sorted(by_model.items())):
            blocks.append(Figure(f"predictor-scatter-{index}.png", plots.predicted_vs_measured(series, model),
                                 f"predicted against measured latency, {model}",
                                 f"Predicted vs measured latency, {model}; the band is ±10% of measured."))
    else:
        blocks.append(Missing("predicted/measured pairs per configuration",
                              "the benchmark files hold scores only, not the individual pairs"))
        for bench in inputs.predictor_benchmarks:
            if bench.plot_png:
                with open(bench.plot_png, "rb") as handle:
                    png = handle.read()
                blocks.append(Figure(f"predictor-benchmark-{len(blocks)}.png", png,
                                     "predicted against measured latency, drawn by the benchmark",
                                     f"The scatter plot written by the benchmark beside {bench.source} (its own "
                                     "figure, embedded as is; the band is ±10%)."))
    return Section("predictors", title, tuple(blocks))


def _geo_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def kernel_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    title = "Sparse kernel benchmarks"
    if not inputs.kernel_benchmarks:
        return Section("kernels", title, (Missing("kernel benchmarks", "no kernels-*.json or .csv from "
                                                  "benchmarks/sparse_kernels.py; run `make bench-kernels`"),))
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    ideal: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    cases: dict[tuple, dict] = {}
    for bench in inputs.kernel_benchmarks:
        for row in bench.rows:
            if row.get("pattern") in (None, "dense"):
                continue
            device = f"{row.get('device', '?')} {row.get('dtype', '')}".strip()
            key = (device, row["pattern"], number(row.get("sparsity")), row.get("backend", "?"),
                   labels.source(bench.source, bench.fingerprint_id))
            case = cases.setdefault(key, {"speedups": [], "ideal": number(row.get("ideal_speedup")), "missing": []})
            speedup = number(row.get("speedup_vs_dense"))
            if speedup is None or speedup <= 0 or key[2] is None:
                case["missing"].append(row.get("note") or "not measured")
                continue
            case["speedups"].append(speedup)
            panels[device][f"{row['pattern']} ({key[3]})"].append((key[2], speedup))
            if case["ideal"] is not None:
                ideal[device][row["pattern"]].append((key[2], case["ideal"]))
    blocks: list = [Paragraph("Speedup of the sparse kernel (as a user runs it, im2col included) over dense PyTorch "
                              "on the same layer, per pattern and sparsity; ideal = 1/(1-sparsity) for blocks and "
                              "stripes, 2x for 2:4.")]
    if panels:
        blocks.append(Figure("kernel-speedup.png", plots.kernel_speedup(panels, ideal),
                             "speedup over dense against sparsity per pattern and device",
                             "Speedup over dense vs sparsity: dots are layers, lines the geometric mean, dashed "
                             "the ideal of each pattern."))
    else:
        blocks.append(Missing("kernel speedup plot", "no kernel row has a measured speedup"))
    rows = []
    for (device, pattern, sparsity, backend, source), case in sorted(cases.items(), key=lambda kv: str(kv[0])):
        speedups, missing = case["speedups"], case["missing"]
        mean = _geo_mean(speedups) if speedups else None
        share = mean / case["ideal"] if mean and case["ideal"] else None
        rows.append((device, pattern, _pct(sparsity), backend, str(len(speedups)),
                     cell(mean, "{:.2f}x"), cell(case["ideal"], "{:.2f}x"), _pct(share),
                     f"{len(missing)}: {sorted(set(missing))[0]}" if missing else "0", source))
    blocks.append(Table(("device", "pattern", "sparsity", "backend", "layers measured", "geo-mean speedup",
                         "ideal speedup", "share of ideal", "layers not measured", "source"), tuple(rows)))
    return Section("kernels", title, tuple(blocks))


def _ratio(value, dense) -> str:
    value, dense = number(value), number(dense)
    return f"{value:,.0f} ({value / dense:.1%})" if value is not None and dense else cell(value, "{:,.0f}")


def _predicted_label(source: str | None) -> str:
    """'predicted by lpnet (...)' as it is; an older manifest's bare source gets the 'predicted:' label."""
    source = source or "source not recorded"
    return source if source.startswith("predicted") else f"predicted: {source}"


def _bundle_row(record: ManifestRecord, labels: FingerprintLabels) -> tuple[str, ...]:
    m, predicted = record.manifest, record.predicted_latency_ms
    measured = m.latency.measured if record.measured_latency_ms is not None else None  # with its statistic
    accuracy, budget = m.accuracy, m.budget
    return (record.source.removesuffix("/manifest.json").removesuffix("manifest.json") or ".",
            cell(record.model), cell(record.target), _ms(number(budget.budget_ms) if budget else None),
            _ms(record.measured_latency_ms) + (f" ({measured.statistic})" if measured and measured.statistic else ""),
            f"{predicted:.4f} ms ({_predicted_label(record.prediction_source)})" if predicted is not None else MISSING,
            _pct(number(accuracy.pruned) if accuracy else None), _pct(number(accuracy.dense) if accuracy else None),
            cell(accuracy.data if accuracy else None),
            _ratio(m.pruning.params, m.pruning.dense_params), _ratio(m.pruning.macs, m.pruning.dense_macs),
            cell(budget.criterion if budget else None), cell(budget.allocator if budget else None),
            labels.source(record.source, record.fingerprint_id))


def bundles_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    title = "Deploy bundles"
    if not inputs.manifests:
        return Section("bundles", title, (Missing("deploy bundles", "no manifest.json under the given folders; run "
                                                  "`make deploy` or `toolchain deploy`"),))
    rows = []
    for record in sorted(inputs.manifests, key=lambda m: m.source):
        rows.append(_bundle_row(record, labels))
    not_measured = sorted({m.manifest.latency.not_measured for m in inputs.manifests
                           if m.measured_latency_ms is None and m.manifest.latency.not_measured})
    blocks: list = [Table(("bundle", "model", "target", "budget", "measured latency (statistic)", "predicted latency",
                           "accuracy", "dense accuracy", "accuracy data", "params (of dense)", "MACs (of dense)",
                           "criterion", "allocator", "source"), tuple(rows))]
    blocks += [Paragraph(f"Why a bundle has no measured latency: {note}") for note in not_measured]
    return Section("bundles", title, tuple(blocks))
