"""Latency-predictor benchmark: noise floor, held-out accuracy per predictor, and a cross-architecture test.

For each model: profile (resumable; rows already in --db are reused), re-measure a few configurations to get
the noise floor, fit every predictor, and score it on held-out configurations (MAPE, share within ±5% and
±10%, Spearman). Then train `layerwise` (and the MACs baseline) on the training models and test it on an
architecture it never saw. Writes JSON rows, a predicted-vs-measured scatter plot, and a Markdown table,
all named by their environment.

    flock /tmp/toolchain-bench.lock python benchmarks/latency_predictor.py --samples 300
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.fingerprint import fingerprint_id, machine_fingerprint
from toolchain.latency.fitting import FitConfig, fit_predictor, load_rows, split_queries
from toolchain.latency.measure import STATISTICS, MeasureConfig, latency_ms, measure
from toolchain.latency.predictors import LatencyQuery
from toolchain.latency.store import MeasurementStore
from toolchain.targets import get_target
from toolchain.threads import torch_threads

PREDICTORS = ("lpnet", "layerwise", "lut", "macs")


def noise_floor(db_path: str, model: str, target, statistic: str = "median") -> dict:
    """Relative deviation of re-measurements (replicates) from the first measurement of a configuration,
    each measurement's latency taken by `statistic` (median or min of its timed runs)."""
    with MeasurementStore(db_path) as store:
        rows = store.rows(model, target.name, target.backend, target.threads)
    first = {json.dumps(r.widths, sort_keys=True): latency_ms(r, statistic) for r in rows if r.replicate == 0}
    deviations = [
        abs(latency_ms(r, statistic) / first[key] - 1)
        for r in rows
        if r.replicate > 0
        if (key := json.dumps(r.widths, sort_keys=True)) in first
    ]
    if not deviations:
        return {"n": 0}
    values = np.asarray(deviations)
    return {
        "n": int(values.size),
        "median_abs_dev_pct": float(100 * np.median(values)),
        "max_abs_dev_pct": float(100 * values.max()),
        "within_5pct": float((values <= 0.05).mean()),
        "within_10pct": float((values <= 0.10).mean()),
    }


def clock_check(model_spec: str, target, args) -> dict:
    """The dense model timed with the wall clock and with the timing thread's CPU clock, back to back: on a
    loaded machine the gap is the time other processes held the core."""
    import os

    from toolchain.models import resolve_model

    model, inputs = resolve_model(model_spec)
    input_shape = inputs[0].shape
    with torch_threads(1):
        runner = target.prepare(model, torch.randn(*input_shape))
    result = {"model": model_spec, "load_average_1min": os.getloadavg()[0]}
    for clock in ("wall", "thread_cpu"):
        m = measure(runner, MeasureConfig(args.warmup, args.runs, clock=clock))
        result[clock] = {"median_ms": m.median_ms, "iqr_ms": m.iqr_ms, "min_ms": m.min_ms}
    return result


def alignment_effect(db_path: str, model: str, target) -> dict:
    """Median measured ms per GMAC of configurations whose widths were rounded to multiples of 8/16/32
    (aligned) and of those left unrounded: what a MAC count cannot see."""
    with MeasurementStore(db_path) as store:
        rows = [r for r in store.rows(model, target.name, target.backend, target.threads) if r.replicate == 0]
    ms_per_gmac = {"aligned": [], "unaligned": []}
    for r in rows:
        if r.sample_tag != "dense":
            ms_per_gmac["aligned" if "aligned" in r.sample_tag else "unaligned"].append(r.median_ms / (r.macs / 1e9))
    return {
        kind: {"n": len(v), "median_ms_per_gmac": float(np.median(v)) if v else None} for kind, v in ms_per_gmac.items()
    }


def heldout_queries(db_path: str, config: FitConfig) -> list[LatencyQuery]:
    with MeasurementStore(db_path, create=False) as store:
        rows = load_rows(store, config)
    return [q for model_rows in rows.values()
            for q in split_queries(model_rows, config.heldout_fraction, config.statistic)[1]]


def all_queries(db_path: str, config: FitConfig) -> list[LatencyQuery]:
    with MeasurementStore(db_path, create=False) as store:
        rows = load_rows(store, config)
    return [LatencyQuery.from_row(r, config.statistic) for model_rows in rows.values() for r in model_rows]


def profile(args, model: str, samples: int, target, layer_levels: int, noise_configs: int) -> dict:
    config = CampaignConfig(
        model=model,
        db_path=args.db,
        target=target.name,
        backend=target.backend,
        threads=target.threads,
        samples=samples,
        layer_levels=layer_levels,
        noise_configs=noise_configs,
        measure=MeasureConfig(args.warmup, args.runs, clock=args.clock, statistic=args.statistic,
                              min_timed_ms=args.min_timed_ms),
    )
    start_s = time.perf_counter()

    def on_progress(done: int, total: int, what: str) -> None:
        if done % 25 == 0 or done == total:
            print(f"{model}: {done}/{total} measured ({time.perf_counter() - start_s:.0f} s)", flush=True)

    report = run_campaign(config, on_progress=on_progress)
    return {
        "model": model,
        "planned": report.planned,
        "measured_now": report.measured,
        "already_stored": report.skipped,
        "failed": report.failed[:5],
        "profile_wall_s": time.perf_counter() - start_s,
    }


def fit_and_score(args, models: tuple[str, ...], predictor: str, target) -> tuple[dict, list, list]:
    config = FitConfig(
        db_path=args.db,
        predictor=predictor,
        models=models,
        target=target.name,
        backend=target.backend,
        threads=target.threads,
        statistic=args.statistic,
    )
    start_s = time.perf_counter()
    fitted = fit_predictor(config)
    fit_s = time.perf_counter() - start_s
    heldout = heldout_queries(args.db, config)
    out_dir = Path(args.artifacts) / f"{_slug(models[0])}-{target.name}-{target.backend}-{predictor}"
    fitted.save(out_dir)
    row = {
        "models": list(models),
        "predictor": predictor,
        "n_train": fitted.meta.n_train,
        "n_single_ops": fitted.meta.n_single_ops,
        "fit_wall_s": fit_s,
        "artifact": str(out_dir),
        **fitted.meta.heldout_metrics,
    }
    return row, [q.measured_ms for q in heldout], fitted.predict_many(heldout)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text.split(":")[-1]).strip("-").lower()


def scatter_plot(panels: list[tuple[str, list, list]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for axis, (title, measured, predicted) in zip(axes.flat, panels, strict=False):
        low, high = min(measured + predicted), max(measured + predicted)
        line = np.linspace(low, high, 2)
        axis.plot(line, line, "k-", lw=0.8)
        axis.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="±10%")
        axis.scatter(measured, predicted, s=8)
        axis.set(title=title, xlabel="measured ms", ylabel="predicted ms")
        axis.legend(loc="upper left", fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _train_cell(row: dict) -> str:
    ops = row.get("n_single_ops", 0)
    return f"{row['n_train']}" + (f" + {ops} single ops" if ops else "")


def markdown_report(result: dict) -> str:
    """The tables of BENCHMARKS.md, from the JSON this script writes."""
    lines = [
        f"Clock: `{result['clock']}`; latency of a measurement: `{result.get('statistic', 'median')}` of its "
        "timed runs. Dense models timed with both clocks back to back:",
        "",
        "| model | wall median | thread-CPU median | load average (1 min) |",
        "|---|---|---|---|",
    ]
    for c in result.get("clock_check", []):
        lines.append(
            f"| {c['model']} | {c['wall']['median_ms']:.2f} ms | {c['thread_cpu']['median_ms']:.2f} ms | "
            f"{c['load_average_1min']:.1f} |"
        )
    lines += [
        "",
        "Measured ms per GMAC, aligned (widths rounded to multiples of 8/16/32) vs unaligned configurations:",
        "",
        "| model | aligned (n) | unaligned (n) |",
        "|---|---|---|",
    ]
    for model, a in result.get("alignment", {}).items():
        lines.append(
            f"| {model} | {a['aligned']['median_ms_per_gmac']:.1f} ({a['aligned']['n']}) | "
            f"{a['unaligned']['median_ms_per_gmac']:.1f} ({a['unaligned']['n']}) |"
        )
    lines += ["", "| model | configurations | profile wall time |", "|---|---|---|"]
    for p in result["profiles"]:
        lines.append(
            f"| {p['model']} | {p['planned']} ({p['measured_now']} measured in this run) | "
            f"{p['profile_wall_s'] / 60:.1f} min |"
        )
    lines += [
        "",
        "Noise floor (the same configuration re-measured; deviation from its first measurement), with each",
        "measurement's latency taken as the median and as the minimum of its timed runs:",
        "",
        "| model | statistic | re-measurements | median abs. dev. | max abs. dev. | within ±5% | within ±10% |",
        "|---|---|---|---|---|---|---|",
    ]
    floors = result.get("noise_floor_by_statistic") or {m: {result.get("statistic", "median"): n}
                                                        for m, n in result["noise_floor"].items()}
    for model, by_statistic in floors.items():
        for statistic, n in by_statistic.items():
            if n.get("n"):
                lines.append(
                    f"| {model} | {statistic} | {n['n']} | {n['median_abs_dev_pct']:.2f}% | "
                    f"{n['max_abs_dev_pct']:.2f}% | {_pct(n['within_5pct'])} | {_pct(n['within_10pct'])} |"
                )
    lines += [
        "",
        "Held-out configurations:",
        "",
        "| model | predictor | train | held out | MAPE | within ±5% | within ±10% | Spearman | fit time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["heldout"]:
        lines.append(
            f"| {r['models'][0]} | {r['predictor']} | {_train_cell(r)} | {r['n']} | {r['mape_pct']:.2f}% | "
            f"{_pct(r['within_5pct'])} | {_pct(r['within_10pct'])} | {r['spearman']:.3f} | "
            f"{r['fit_wall_s']:.0f} s |"
        )
    if result["cross_architecture"]:
        lines += [
            "",
            "Cross-architecture (trained on the models above, tested on all configurations of an unseen one):",
            "",
            "| unseen model | predictor | trained on | tested on | MAPE | within ±5% | within ±10% | Spearman |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["cross_architecture"]:
            lines.append(
                f"| {r['unseen_model']} | {r['predictor']} | {_train_cell(r)} | {r['n']} | {r['mape_pct']:.2f}% | "
                f"{_pct(r['within_5pct'])} | {_pct(r['within_10pct'])} | {r['spearman']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="zoo:resnet18,zoo:mobilenet_v2")
    parser.add_argument("--samples", type=int, default=300, help="width configurations per model (<= 500)")
    parser.add_argument("--unseen", default="zoo:resnet50", help="architecture for the cross-architecture test")
    parser.add_argument("--unseen-samples", type=int, default=40)
    parser.add_argument("--layer-levels", type=int, default=4)
    parser.add_argument("--noise-configs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--min-timed-ms", type=float, default=50.0,
                        help="each attempt's timed runs span at least this long")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "thread_cpu"],
        help="thread_cpu: robust to other processes on a shared machine (1 thread only)",
    )
    parser.add_argument(
        "--statistic",
        default="median",
        choices=STATISTICS,
        help="each measurement's latency for fitting and scoring (min: robust on a shared machine)",
    )
    parser.add_argument("--db", default="runs/latency-bench.db")
    parser.add_argument("--artifacts", default="runs/latency-artifacts")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    target = get_target("cpu", "onnxruntime", threads=1)
    fingerprint = machine_fingerprint(target)
    models = tuple(m for m in args.models.split(",") if m)
    result = {
        "fingerprint": fingerprint,
        "fingerprint_id": fingerprint_id(fingerprint),
        "target": target.label,
        "command": "benchmarks/latency_predictor.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "clock": args.clock,
        "statistic": args.statistic,
        "clock_check": [],
        "profiles": [],
        "noise_floor": {},
        "noise_floor_by_statistic": {},
        "alignment": {},
        "heldout": [],
        "cross_architecture": [],
    }
    panels = []
    for model in models:
        result["profiles"].append(profile(args, model, args.samples, target, args.layer_levels, args.noise_configs))
        result["noise_floor"][model] = noise_floor(args.db, model, target, args.statistic)
        result["noise_floor_by_statistic"][model] = {
            statistic: noise_floor(args.db, model, target, statistic) for statistic in ("median", "min")
        }
        result["clock_check"].append(clock_check(model, target, args))
        result["alignment"][model] = alignment_effect(args.db, model, target)
        for predictor in PREDICTORS:
            row, measured, predicted = fit_and_score(args, (model,), predictor, target)
            result["heldout"].append(row)
            panels.append((f"{_slug(model)} {predictor}", measured, predicted))
            print(json.dumps(row))
    if args.unseen:
        result["profiles"].append(profile(args, args.unseen, args.unseen_samples, target, 0, 0))
        unseen_config = FitConfig(
            db_path=args.db,
            predictor="layerwise",
            models=(args.unseen,),
            target=target.name,
            backend=target.backend,
            threads=target.threads,
            statistic=args.statistic,
        )
        unseen = all_queries(args.db, unseen_config)
        for predictor in ("layerwise", "macs"):
            fitted = fit_predictor(
                FitConfig(
                    db_path=args.db,
                    predictor=predictor,
                    models=models,
                    target=target.name,
                    backend=target.backend,
                    threads=target.threads,
                    statistic=args.statistic,
                )
            )
            predicted = fitted.predict_many(unseen)
            row = {
                "train_models": list(models),
                "unseen_model": args.unseen,
                "predictor": predictor,
                "n_train": fitted.meta.n_train,
                "n_single_ops": fitted.meta.n_single_ops,
                **fitted.evaluate(unseen),
            }
            result["cross_architecture"].append(row)
            panels.append((f"unseen {_slug(args.unseen)} {predictor}", [q.measured_ms for q in unseen], predicted))
            print(json.dumps(row))
    environment = f"{_slug(fingerprint.get('cpu_model', 'cpu'))}-ort{fingerprint['versions']['onnxruntime']}-1t"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"latency-{environment}.json").write_text(json.dumps(result, indent=1) + "\n")
    scatter_plot(panels, out / f"latency-{environment}.png")
    (out / f"latency-{environment}.md").write_text(markdown_report(result))
    print(f"wrote {out / f'latency-{environment}.json'} and .png")


if __name__ == "__main__":
    main()
