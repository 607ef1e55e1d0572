"""Benchmark: saliency criteria in the low-data regime, no fine-tuning, the same allocation for every criterion.

For each model (the demo on MNIST-5k; the ResNet-56-style model of `budget_sweep.py`, trained there briefly
on MNIST-5k at 16x16 in 3 channels), each calibration set size and each seed (which calibration images are
drawn from the calibration split, and the criteria's own seed), every criterion scores the channels; each
group then keeps the same fixed share of its channels (`--removed`, per group, no rounding to multiples),
so criteria differ only in which channels they keep. BatchNorm is re-calibrated on the calibration images
alone and test accuracy measured (no fine-tuning). Each criterion's cost is recorded in wall and process
CPU seconds (one torch thread), with what it spent (Shapley: permutations, forward passes, convergence).

Rows are appended to benchmarks/results/criteria-low-data-<environment>.jsonl as they finish, and a rerun
skips the rows already there (resumable). Calibration sizes are the outer loop and seeds the inner, so a
run cut short has whole intervals for the sizes it reached.

    PYTHONPATH=. python benchmarks/criteria_low_data.py --seeds 0,1,2 --calib-sizes 16,64,256
    PYTHONPATH=. python benchmarks/criteria_low_data.py --report-only      # the table from the rows
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import statistics
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import torch
from torch.utils.data import Subset

from toolchain.data import resolve_data
from toolchain.evaluate import accuracy
from toolchain.graph import PruningGraph, widths_for_ratio
from toolchain.models import resolve_model
from toolchain.recover import recalibrate_batchnorm
from toolchain.saliency import SaliencyConfig, score_groups_report

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
PER_RATIO = {"composite"}  # criteria that judge their choice at the pruned width: scored per ratio


def _budget_sweep():
    """`benchmarks/budget_sweep.py` (not a package): its model table, data and brief training."""
    spec = importlib.util.spec_from_file_location("budget_sweep", HERE.parent / "budget_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment() -> str:
    cpu = next((line.split(":", 1)[1].split()[0].lower() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else "cpu"
    return f"{cpu}-{platform.machine()}-torch{metadata.version('torch')}-tp{metadata.version('torch-pruning')}-1t"


def load_model(name: str, sweep) -> tuple[torch.nn.Module, tuple[int, ...], object, float]:
    """Dense model (eval), its input shape, its data splits and its dense test accuracy."""
    spec, shape, data_spec, steps = sweep.MODELS[name]
    weights = None if steps is None else str(sweep.train_briefly(name, steps)[0])
    model, _ = resolve_model(spec, weights, shape)
    data = resolve_data(data_spec)
    return model.eval(), shape, data, accuracy(model, data.test)


def calibration_subset(data, size: int, seed: int) -> Subset:
    order = torch.randperm(len(data.calib), generator=torch.Generator().manual_seed(seed))
    return Subset(data.calib, order[:size].tolist())


def score(dense, shape, criterion: str, calib, config: SaliencyConfig) -> tuple[dict, dict]:
    """Scores on a copy of the dense model, with the report and process CPU seconds."""
    model = copy.deepcopy(dense)
    graph = PruningGraph(model, torch.randn(*shape))
    start_cpu = time.process_time()
    scores, report = score_groups_report(model, graph, criterion, calib, config)
    report["cpu_seconds"] = round(time.process_time() - start_cpu, 3)
    return scores, report


def pruned_accuracy(dense, shape, scores, removed: float, calib, test) -> float:
    """Every group keeps (1 - removed) of its channels by `scores`; BN re-calibrated on `calib`; test accuracy."""
    model = copy.deepcopy(dense)
    graph = PruningGraph(model, torch.randn(*shape))
    graph.shrink(widths_for_ratio(graph, removed, round_to=1), scores)
    recalibrate_batchnorm(model, calib, batch_size=64, max_batches=math.ceil(len(calib) / 64))
    return accuracy(model, test)


def run_unit(args, sweep, loaded, name: str, size: int, seed: int, done: set, out: Path) -> None:
    """Every criterion and ratio for one (model, calibration size, seed); appends each row as it finishes."""
    dense, shape, data, dense_accuracy = loaded
    calib = calibration_subset(data, size, seed)
    base = SaliencyConfig(batch_size=64, max_batches=math.ceil(size / 64), seed=seed,
                          shapley_seconds=args.shapley_seconds, shapley_clock="cpu", probe_keep_ratio=0.5)
    for criterion in args.criteria.split(","):
        shared = None
        for removed in args.removed:
            key = f"{name}/{size}/{seed}/{criterion}/{removed:g}"
            if key in done:
                continue
            if criterion in PER_RATIO:
                scores, report = score(dense, shape, criterion, calib, replace(base, probe_keep_ratio=1 - removed))
            else:
                if shared is None:
                    shared = score(dense, shape, criterion, calib, base)
                scores, report = shared
            row = {"key": key, "model": name, "calib_images": size, "seed": seed, "criterion": criterion,
                   "removed": removed, "dense_accuracy": dense_accuracy,
                   "accuracy": pruned_accuracy(dense, shape, scores, removed, calib, data.test),
                   "scoring": report, "load_1min": round(os.getloadavg()[0], 2),
                   "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.add(key)
            print(f"{key}: accuracy {row['accuracy']:.4f}, scoring {report['cpu_seconds']} cpu s", flush=True)


def read_rows(path: Path) -> list[dict]:
    """The rows written so far, the first of each key (processes splitting the seeds may repeat a row)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return list({r["key"]: r for r in reversed(rows)}.values())[::-1]


def interval_95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds.

    >>> interval_95([0.5, 0.6, 0.7])
    (0.6, 0.2484)
    """
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return round(mean, 4), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return round(mean, 4), round(half, 4)


def _cost(rows: list[dict]) -> str:
    cpu = statistics.median(r["scoring"]["cpu_seconds"] for r in rows)
    text = f"{cpu:.1f}"
    if rows[0]["criterion"] == "shapley":
        perms = statistics.median(r["scoring"]["permutations"] for r in rows)
        converged = sum(r["scoring"]["groups_converged"] for r in rows)
        groups = converged + sum(r["scoring"]["groups_hit_limit"] for r in rows)
        text += f" ({perms:g} perms, {converged}/{groups} groups converged)"
    if rows[0]["criterion"] == "composite":
        fell_back = sum(r["scoring"]["fell_back"] for r in rows)
        text += f" (fell back {fell_back}/{len(rows)})"
    return text


def markdown(rows: list[dict]) -> str:
    """One table per model: accuracy mean ± 95% interval over seeds per calibration size and removed share."""
    lines = []
    for model in sorted({r["model"] for r in rows}, key=lambda m: m != "demo"):
        mine = [r for r in rows if r["model"] == model]
        columns = sorted({(r["calib_images"], r["removed"]) for r in mine})
        dense = mine[0]["dense_accuracy"]
        lines += ["", f"**{model}** (dense test accuracy {dense:.4f}): test accuracy after BN re-calibration on the "
                  "calibration images, mean ± 95% t-interval over seeds (n); scoring cost: median process CPU "
                  "seconds per scoring (1 thread)", "",
                  "| criterion | " + " | ".join(f"{n} img, {r:g} removed" for n, r in columns) + " | scoring CPU s |",
                  "|---" * (len(columns) + 2) + "|"]
        for criterion in sorted({r["criterion"] for r in mine}):
            cells = []
            for n, removed in columns:
                values = [r["accuracy"] for r in mine if (r["criterion"], r["calib_images"], r["removed"]) ==
                          (criterion, n, removed)]
                mean, half = interval_95(values) if values else (None, None)
                cells.append("-" if mean is None else f"{mean:.3f} ± {half:.3f} ({len(values)})")
            cost = _cost([r for r in mine if r["criterion"] == criterion])
            lines.append(f"| {criterion} | " + " | ".join(cells) + f" | {cost} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet56")
    parser.add_argument("--criteria", default="shapley,l1,taylor,redundancy,sensitivity,composite,random")
    parser.add_argument("--calib-sizes", default="16,64,256")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--removed", default="0.5,0.3", type=lambda s: [float(x) for x in s.split(",")])
    parser.add_argument("--shapley-seconds", type=float, default=15.0,
                        help="Shapley's limit per scoring, process CPU seconds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or RESULTS / f"criteria-low-data-{environment()}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        sweep, done, loaded = _budget_sweep(), {r["key"] for r in read_rows(out)}, {}
        for size in map(int, args.calib_sizes.split(",")):
            for name in args.models.split(","):
                loaded[name] = loaded.get(name) or load_model(name, sweep)
                for seed in map(int, args.seeds.split(",")):
                    run_unit(args, sweep, loaded[name], name, size, seed, done, out)
    table = markdown(read_rows(out))
    summary = out.with_suffix(".md")
    temporary = summary.with_suffix(".md.tmp")
    temporary.write_text(f"rows: {out.name}\n{table}")
    temporary.replace(summary)
    print(table)


if __name__ == "__main__":
    main()
