"""The latency predictor held to what it is used for: configurations the allocators produce.

1. Profile the model (resumable campaign: sampled configurations + re-measurements for the noise floor).
2. Fit a first `lpnet` on the sampled configurations only; ask the allocators (lpnet, knapsack) and the
   baselines (uniform, macs) for widths at round-to 1/8/16 over a range of budgets, through that predictor.
3. Time those configurations into the same database (same protocol); a hashed half of them is held out.
4. Fit `lpnet` again, with and without the other half in training; score both on the held-out allocator
   configurations (and on held-out sampled ones).
5. Export every held-out allocator configuration to ONNX and time the files with a plain onnxruntime loop
   (`ort_plain_timing.py`, no toolchain code); compare the predictors and the toolchain's stored
   measurement with that independent timing.

Everything is CPU time of the timing thread and the minimum of the timed runs (the toolchain's defaults
for the cpu target). Results: benchmarks/results/latency-allocator-heldout-<environment>.{json,md}.

    python benchmarks/latency_allocator_heldout.py --model zoo:resnet18 --samples 300
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from latency_predictor import _slug, noise_floor
from ort_plain_timing import PlainTiming, time_onnx_files

from toolchain.allocate import PredictorLatency
from toolchain.graph import PruningGraph
from toolchain.latency.allocator_sampling import AllocatorGrid, allocator_configs, lpnet_macs_counter
from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.fingerprint import machine_fingerprint
from toolchain.latency.fitting import FitConfig, fit_predictor, load_rows, split_rows
from toolchain.latency.given_configs import time_given_configs
from toolchain.latency.metrics import accuracy_metrics
from toolchain.latency.store import MeasurementStore
from toolchain.latency.variants import build_variant
from toolchain.models import resolve_model
from toolchain.targets import Target

MAX_MEASUREMENTS = 500  # whole-model measurements per model and target, re-measurements included


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _progress(label: str):
    start_s = time.perf_counter()

    def report(done: int, total: int, what: str) -> None:  # called once per chunk of 16
        print(f"{label}: {done}/{total} ({time.perf_counter() - start_s:.0f} s) {_uptime()}", flush=True)

    return report


def _fit(args, target: Target, **fields):
    config = FitConfig.for_target(args.db, "lpnet", target, models=(args.model,), **fields)
    return fit_predictor(config), config


def _allocator_heldout(args, config: FitConfig):
    with MeasurementStore(args.db, create=False) as store:
        rows = load_rows(store, config)[args.model]
    split = split_rows(rows, config)
    by_key = {r.config_key: r for r in rows}
    return [(q, by_key[q.config_key]) for q in split.allocator_heldout]


def _breakdown(queries, predicted) -> dict:
    """Within ±10% and MAPE per allocator and per round-to, on the held-out allocator configurations."""
    out = {}
    for position, label in ((1, "allocator"), (2, "round_to")):
        groups: dict[str, list[int]] = {}
        for i, (_, row) in enumerate(queries):
            groups.setdefault(row.sample_tag.split(":")[position], []).append(i)
        out[label] = {name: accuracy_metrics([queries[i][0].measured_ms for i in idx], [predicted[i] for i in idx])
                      for name, idx in sorted(groups.items())}
    return out


def independent_check(args, heldout, predictors: dict, model, example_input) -> dict:
    """Export each held-out configuration to ONNX, time the files with the plain loop, compare."""
    with tempfile.TemporaryDirectory(prefix="predhold-onnx-") as folder:
        from toolchain.export.onnx import export_onnx

        paths = []
        for i, (query, _) in enumerate(heldout):
            path = Path(folder) / f"config{i:03d}.onnx"
            export_onnx(build_variant(model, example_input, query.widths), example_input, path)
            paths.append(str(path))
        start = time.process_time()
        timings = time_onnx_files(paths, PlainTiming(rounds=args.plain_rounds, min_span_ms=args.plain_span_ms))
        plain_cpu_s = time.process_time() - start
    independent = [timings[p].min_ms for p in paths]
    spreads = np.asarray([timings[p].round_spread for p in paths])
    result = {
        "n": len(paths),
        "plain_timing": {"rounds": args.plain_rounds, "min_span_ms": args.plain_span_ms, "process_cpu_s": plain_cpu_s,
                         "round_spread_median_pct": float(100 * np.median(spreads)),
                         "round_spread_max_pct": float(100 * spreads.max()),
                         "round_spread_within_5pct": float((spreads <= 0.05).mean())},
        "toolchain_measurement_vs_independent": accuracy_metrics(independent, [q.measured_ms for q, _ in heldout]),
        "rows": [{"tag": row.sample_tag, "widths": q.widths, "toolchain_ms": q.measured_ms, "independent_ms": ms,
                  "independent_round_min_ms": list(timings[p].round_min_ms)}
                 for (q, row), ms, p in zip(heldout, independent, paths, strict=True)],
    }
    for name, predictor in predictors.items():
        predicted = predictor.predict_many([q for q, _ in heldout])
        result[f"{name}_vs_independent"] = accuracy_metrics(independent, predicted)
        for row, value in zip(result["rows"], predicted, strict=True):
            row[f"{name}_ms"] = value
    return result


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _metric_row(label: str, m: dict) -> str:
    return (f"| {label} | {m['n']} | {m['mape_pct']:.2f}% | {_pct(m['within_5pct'])} | {_pct(m['within_10pct'])} | "
            f"{m['max_error_pct']:.1f}% |")


def markdown_report(result: dict) -> str:
    """The tables of BENCHMARKS.md's allocator held-out paragraph, from the JSON this script writes."""
    header = ["| what | n | MAPE | within ±5% | within ±10% | max error |", "|---|---|---|---|---|---|"]
    lines = [f"`{result['command']}`", "", f"Load: start `{result['uptime_start']}`; end `{result.get('uptime_end')}`.",
             f"Measurements: {result['measurements']}; allocator configurations timed: {result['allocator_timing']} "
             "(already stored = drawn by the sampler too, kept under its tag); lpnet MACs / stored MACs: "
             f"{result.get('lpnet_macs_over_stored_macs')}", "", *header]
    for name, fit in result["fits"].items():
        lines.append(_metric_row(f"`{name}` ({fit['n_train']} trained, {fit['n_allocator_train']} of them "
                                 "allocator outputs): held-out allocator outputs", fit["allocator_heldout"]))
        lines.append(_metric_row(f"`{name}`: held-out sampled configurations", fit["sampled_heldout"]))
    independent = result["independent"]
    lines.append(_metric_row("toolchain measurement vs plain onnxruntime timing (same files' configurations)",
                             independent["toolchain_measurement_vs_independent"]))
    for name in result["fits"]:
        lines.append(_metric_row(f"`{name}` prediction vs plain onnxruntime timing",
                                 independent[f"{name}_vs_independent"]))
    floor = result["noise_floor_min"]
    if floor.get("n"):
        lines.append(f"| campaign re-measurements vs first measurement (noise floor) | {floor['n']} | "
                     f"{floor['median_abs_dev_pct']:.2f}% (median) | {_pct(floor['within_5pct'])} | "
                     f"{_pct(floor['within_10pct'])} | {floor['max_abs_dev_pct']:.1f}% |")
    plain = independent["plain_timing"]
    lines += ["", f"Plain timing's own spread (largest / smallest of a file's {plain['rounds']} round minima - 1): "
              f"median {plain['round_spread_median_pct']:.2f}%, max {plain['round_spread_max_pct']:.2f}%, "
              f"within 5% for {_pct(plain['round_spread_within_5pct'])} of files.", "", "Per allocator / round-to "
              "(fit with allocator training, held-out allocator outputs):", "", *header]
    for kind, groups in result["fits"]["with_allocator_training"]["allocator_breakdown"].items():
        for name, m in groups.items():
            lines.append(_metric_row(f"{kind} {name}", m))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zoo:resnet18")
    parser.add_argument("--input-shape", default="", help="e.g. 1,3,224,224; default: the model source's own")
    parser.add_argument("--samples", type=int, default=300, help="sampled configurations in the campaign")
    parser.add_argument("--noise-configs", type=int, default=5, help="configurations re-measured 3 times")
    parser.add_argument("--budgets", default="0.25,0.325,0.4,0.475,0.55,0.625,0.7,0.775,0.85,0.925",
                        help="budgets as fractions of the dense model's predicted latency")
    parser.add_argument("--round-tos", default="1,8,16")
    parser.add_argument("--allocators", default="lpnet,knapsack,uniform,macs")
    parser.add_argument("--plain-rounds", type=int, default=3)
    parser.add_argument("--plain-span-ms", type=float, default=100.0)
    parser.add_argument("--db", default="runs/predhold/latency.db")
    parser.add_argument("--artifacts", default="runs/predhold/artifacts")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--render", default="", help="only rewrite the .md of this results JSON")
    args = parser.parse_args()
    if args.render:
        Path(args.render).with_suffix(".md").write_text(markdown_report(json.loads(Path(args.render).read_text())))
        return

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    target = Target("cpu")  # the toolchain's defaults: onnxruntime, 1 thread, thread_cpu clock, min statistic
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "benchmarks/latency_allocator_heldout.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "uptime_start": _uptime(),
        "fingerprint": machine_fingerprint(target.resolve()), "clock": "thread_cpu", "statistic": "min"}
    input_shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    campaign = CampaignConfig.for_target(args.model, args.db, target, samples=args.samples,
                                         noise_configs=args.noise_configs, input_shape=input_shape)
    report = run_campaign(campaign, _progress("campaign"))
    result["campaign"] = {"planned": report.planned, "measured_now": report.measured, "failed": report.failed[:5]}
    first, _ = _fit(args, target, train_on_allocator_configs=False)

    torch.manual_seed(0)  # the l1 scores the allocators rank channels by come from these random weights
    model, specs = resolve_model(args.model, input_shape=input_shape)
    from toolchain.inputs import make_inputs, vocab_size_of

    example_input = make_inputs(specs, vocab_size_of(model))
    names = [g.name for g in PruningGraph(copy.deepcopy(model), example_input).groups]
    grid = AllocatorGrid(allocators=tuple(args.allocators.split(",")),
                         round_tos=tuple(int(k) for k in args.round_tos.split(",")),
                         budget_ratios=tuple(float(b) for b in args.budgets.split(",")))
    macs = lpnet_macs_counter(first)  # exact channel maps; shrinking a copy per bisection step costs minutes
    with MeasurementStore(args.db, create=False) as store:
        stored = load_rows(store, FitConfig.for_target(args.db, "lpnet", target, models=(args.model,)))[args.model]
    result["lpnet_macs_over_stored_macs"] = sorted({round(macs(r.widths) / r.macs, 4) for r in stored[:40]})
    configs = allocator_configs(model, example_input, PredictorLatency(first, names), grid, macs)
    total = report.planned + len(configs)
    result["measurements"] = {"campaign": report.planned, "allocator_configs": len(configs), "total": total}
    if total > MAX_MEASUREMENTS:
        raise SystemExit(f"{total} measurements planned, more than {MAX_MEASUREMENTS}: lower --samples")
    given = time_given_configs(campaign, configs, _progress("allocator configs"))
    result["allocator_timing"] = {"planned": given.planned, "measured_now": given.measured,
                                  "already_stored": given.skipped, "failed": given.failed[:5]}

    final, config = _fit(args, target)
    sampled_only, _ = _fit(args, target, train_on_allocator_configs=False)
    final.save(Path(args.artifacts) / f"{_slug(args.model)}-cpu-onnxruntime-lpnet")
    heldout = _allocator_heldout(args, config)
    result["noise_floor_min"] = noise_floor(args.db, args.model, target.resolve(), "min")
    result["fits"] = {}
    for name, predictor in (("with_allocator_training", final), ("sampled_only", sampled_only)):
        predicted = predictor.predict_many([q for q, _ in heldout])
        result["fits"][name] = {"n_train": predictor.meta.n_train,
                                "n_allocator_train": predictor.meta.n_allocator_train,
                                "sampled_heldout": predictor.meta.heldout_metrics,
                                "allocator_heldout": predictor.meta.allocator_heldout_metrics,
                                "allocator_breakdown": _breakdown(heldout, predicted)}
        print(name, json.dumps(result["fits"][name]["allocator_heldout"]), flush=True)
    result["independent"] = independent_check(args, heldout, {"with_allocator_training": final,
                                                              "sampled_only": sampled_only}, model, example_input)
    result["uptime_end"] = _uptime()
    result["process_cpu_s"] = time.process_time() - start_cpu
    result["wall_s_under_load"] = time.perf_counter() - start_wall
    environment = f"{_slug(args.model)}-ort{result['fingerprint']['versions']['onnxruntime']}-1t-thread_cpu-min"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"latency-allocator-heldout-{environment}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(markdown_report(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
