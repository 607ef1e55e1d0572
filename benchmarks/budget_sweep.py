"""Benchmark: pruning under a latency budget on cpu/onnxruntime, measured.

For each model (the demo on MNIST-5k; ResNet-56 (CIFAR layout) and MobileNetV2 at small inputs, trained
briefly here on MNIST-5k resized and replicated to 3 channels) it runs a budget sweep through
`toolchain.sweep` (predictor built on the fly and reused, every point measured on the target) and reports:

* budget hit rate: share of points whose measured latency is in [0.90, 1.00] x budget;
* accuracy against measured latency per allocator and criterion (Pareto plot, PNG), without fine-tuning
  (BN re-calibration only) and, where run, with distillation fine-tuning;
* each criterion's scoring cost in seconds.

Results go to benchmarks/results/sweep-<environment>/ (rows per model, summary.json, summary.md,
pareto.png). Do not wrap this in `flock`: every measurement takes /tmp/toolchain-bench.lock itself.

    .venv/bin/python benchmarks/budget_sweep.py --budgets 0.4,0.6,0.8
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch
from torch.nn import functional
from torch.utils.data import TensorDataset

from toolchain.data import DataSplits, load_mnist5k
from toolchain.latency.measure import STATISTICS
from toolchain.models import create_model

HERE = Path(__file__).resolve()
WEIGHTS_DIR = Path("runs/bench-weights")


# -- data and models for `--data benchmarks/budget_sweep.py:...` and `--model benchmarks/budget_sweep.py:...` --
@lru_cache(maxsize=4)
def _mnist_rgb(size: int) -> DataSplits:
    splits = load_mnist5k()

    def convert(dataset):
        images, labels = dataset.tensors
        resized = functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return TensorDataset(resized.repeat(1, 3, 1, 1).contiguous(), labels)

    return DataSplits(convert(splits.train), convert(splits.calib), convert(splits.test))


def mnist_rgb16() -> DataSplits:
    """MNIST-5k resized to 16x16 and replicated to 3 channels."""
    return _mnist_rgb(16)


def mnist_rgb32() -> DataSplits:
    """MNIST-5k resized to 32x32 and replicated to 3 channels."""
    return _mnist_rgb(32)


def mobilenet_v2_10():
    """MobileNetV2 with a 10-class head."""
    return create_model("mobilenet_v2", num_classes=10)


def resnet56_10():
    return create_model("resnet56_cifar", num_classes=10)


MODELS = {
    # name: (model spec, input shape, data spec, train steps); None steps = shipped weights
    "demo": ("zoo:demo", (1, 1, 28, 28), "mnist5k", None),
    "resnet56": (f"{HERE}:resnet56_10", (1, 3, 16, 16), f"{HERE}:mnist_rgb16", 300),
    "mobilenet_v2": (f"{HERE}:mobilenet_v2_10", (1, 3, 32, 32), f"{HERE}:mnist_rgb32", 300),
}


def train_briefly(name: str, steps: int, seed: int = 0) -> tuple[Path, float]:
    """Train on the MNIST-5k train split (Adam, batch 64) and save safetensors; reused when present."""
    from safetensors.torch import save_file

    from toolchain.data import resolve_data
    from toolchain.evaluate import accuracy
    from toolchain.models import resolve_model

    spec, shape, data_spec, _ = MODELS[name]
    path = WEIGHTS_DIR / f"{name}-{'x'.join(map(str, shape))}-{steps}steps.safetensors"
    model, _ = resolve_model(spec, None, shape)
    data = resolve_data(data_spec)
    if not path.is_file():
        torch.manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        model.train()
        done = 0
        while done < steps:
            for inputs, labels in loader:
                loss = functional.cross_entropy(model(inputs), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                done += 1
                if done >= steps:
                    break
        model.eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    model, _ = resolve_model(spec, str(path), shape)
    return path, accuracy(model, data.test)


# -- summaries -------------------------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> dict:
    measured = [r for r in rows if r.get("error") is None]
    summary = {"points": len(rows), "errors": [f"{r['key']}: {r['error']}" for r in rows if r.get("error")],
               "hits": sum(bool(r["within_band"]) for r in measured), "measured_points": len(measured)}
    summary["hit_rate"] = summary["hits"] / max(len(measured), 1)
    summary["over_budget"] = sum(not r["budget_met"] for r in measured)
    by_allocator: dict = {}
    for r in measured:
        entry = by_allocator.setdefault(r["allocator"], {"acc": [], "acc_ft": [], "ratio": []})
        entry["acc"].append(r["accuracy_after_bn_recalibration"])
        entry["ratio"].append(r["measured_latency_ms"] / r["dense_latency_ms"])
        if r.get("accuracy_finetuned") is not None:
            entry["acc_ft"].append(r["accuracy_finetuned"])
    summary["mean_accuracy_by_allocator"] = {
        a: {"no_finetune": _mean(v["acc"]), "finetuned": _mean(v["acc_ft"]),
            "mean_measured_latency_ratio": _mean(v["ratio"])} for a, v in by_allocator.items()}
    choices: dict = {}
    for r in measured:
        if r.get("calibration_choice") is not None:
            choices.setdefault(r["allocator"], []).append(r["calibration_choice"])
    # "1.0": the allocator's own proposal won; "0.0": uniform; between: a blend; "global": a global threshold
    summary["calibration_choice"] = {a: {c: v.count(c) for c in sorted(set(v))} for a, v in choices.items()}
    by_criterion: dict = {}
    for r in measured:
        entry = by_criterion.setdefault(r["criterion"], {"acc": [], "seconds": set()})
        entry["acc"].append(r["accuracy_after_bn_recalibration"])
        entry["seconds"].add(r["saliency_s"])
    summary["criteria"] = {c: {"mean_accuracy_no_finetune": _mean(v["acc"]),
                               "scoring_seconds": round(max(v["seconds"]), 2)} for c, v in by_criterion.items()}
    return summary


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def pareto_plot(rows_by_model: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows_by_model), figsize=(6 * len(rows_by_model), 4.5), squeeze=False)
    for ax, (model, rows) in zip(axes[0], rows_by_model.items()):
        lines: dict = {}
        for r in rows:
            if r.get("error") is None:
                lines.setdefault(f"{r['allocator']}/{r['criterion']}", []).append(
                    (r["measured_latency_ms"], r["accuracy_after_bn_recalibration"]))
        for label, points in sorted(lines.items()):
            points.sort()
            style = "-" if label.split("/")[0] in ("lpnet", "knapsack") else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", ms=3, label=label)
        dense = next((r for r in rows if r.get("error") is None), None)
        if dense:
            ax.axvline(dense["dense_latency_ms"], color="grey", lw=0.8)
            ax.axhline(dense["dense_accuracy"], color="grey", lw=0.8)
        ax.set_title(f"{model}: accuracy vs measured latency (no fine-tuning)")
        ax.set_xlabel("measured latency (ms, cpu/onnxruntime, 1 thread)")
        ax.set_ylabel("test accuracy after BN re-calibration")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(report: dict, rows_by_model: dict[str, list[dict]]) -> str:
    """Tables for BENCHMARKS.md from the summary and the rows (every figure read from the run's files)."""
    lines = ["| model | input | dense ms | dense acc | predictor held-out MAPE | points | in [0.9, 1.0] x budget "
             "| over budget | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        mape = (m.get("predictor_heldout") or {}).get("mape_pct")
        lines.append(f"| {name} | {'x'.join(map(str, m['input_shape']))} | {m['dense_latency_ms']:.3f} | "
                     f"{_first_dense_accuracy(rows_by_model[name])} | {mape if mape is None else f'{mape:.1f}%'} | "
                     f"{m['points']} | {m['hits']}/{m['measured_points']} ({m['hit_rate']:.0%}) | {m['over_budget']} "
                     f"| {len(m['errors'])} |")
    for name, rows in rows_by_model.items():
        criteria = sorted({r["criterion"] for r in rows})
        allocators = sorted({r["allocator"] for r in rows})
        for criterion in criteria:
            lines += ["", f"**{name}, criterion `{criterion}`**: measured ms / test accuracy after BN re-calibration"
                      + (" / after fine-tuning" if any(r.get("accuracy_finetuned") is not None for r in rows) else ""),
                      "", "| budget | " + " | ".join(allocators) + " |", "|---" * (len(allocators) + 1) + "|"]
            for budget in sorted({r["budget_ratio"] for r in rows}):
                cells = []
                for allocator in allocators:
                    r = next((r for r in rows if (r["budget_ratio"], r["criterion"], r["allocator"]) ==
                              (budget, criterion, allocator)), None)
                    cells.append(_cell(r))
                lines.append(f"| {budget:g} | " + " | ".join(cells) + " |")
    for name, m in report["models"].items():
        if len(m["criteria"]) > 1:
            lines += ["", f"**{name}: criteria (no fine-tuning)**", "",
                      "| criterion | mean accuracy over points | scoring s |", "|---|---|---|"]
            for criterion, c in sorted(m["criteria"].items()):
                lines.append(f"| {criterion} | {c['mean_accuracy_no_finetune']} | {c['scoring_seconds']} |")
    return "\n".join(lines) + "\n"


def _first_dense_accuracy(rows: list[dict]):
    return next((f"{r['dense_accuracy']:.3f}" for r in rows if r.get("dense_accuracy") is not None), "-")


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return "error"
    flag = "" if row["within_band"] else (" (over)" if not row["budget_met"] else " (<0.9)")
    text = f"{row['measured_latency_ms']:.3f}{flag} / {row['accuracy_after_bn_recalibration']:.3f}"
    if row.get("accuracy_finetuned") is not None:
        text += f" / {row['accuracy_finetuned']:.3f}"
    return text


def main() -> None:
    from toolchain.latency.fingerprint import machine_fingerprint
    from toolchain.saliency import SaliencyConfig
    from toolchain.sweep import SweepConfig, parse_budgets, run_sweep
    from toolchain.targets import Target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet56,mobilenet_v2")
    parser.add_argument("--budgets", default="0.3:0.9:0.1")
    parser.add_argument("--criteria", default="l1,taylor,shapley,composite", help="for the demo")
    parser.add_argument("--other-criteria", default="l1,taylor", help="for resnet56 and mobilenet_v2")
    parser.add_argument("--allocators", default="lpnet,knapsack,uniform,macs")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--shapley-samples", type=int, default=2)
    parser.add_argument("--profile-samples", type=int, default=60)
    parser.add_argument("--refine-rounds", type=int, default=1)
    # One process by default: on a 2-vCPU machine a second worker's scoring and evaluation run beside the
    # other's measurements (measurements never overlap each other, but they do overlap other work).
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clock", default="thread_cpu")
    parser.add_argument("--statistic", default="min", choices=STATISTICS,
                        help="a measurement's latency (min: robust to the other jobs on a shared machine)")
    parser.add_argument("--tag", default="", help="suffix of each model's folder and of summary/plot names")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="rewrite summary.md and the plot from rows")
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = Target("cpu", "onnxruntime", 1, args.clock, args.statistic, warmup_runs=2, timed_runs=15,
                    profile_samples=args.profile_samples)
    fingerprint = machine_fingerprint(spec.resolve())
    environment = (f"{fingerprint.get('cpu_model', 'cpu').split()[0].lower()}-{platform.machine()}-"
                   f"ort{fingerprint['versions'].get('onnxruntime', '?')}-1t-{args.clock}-{args.statistic}")
    out = args.out or HERE.parent / "results" / f"sweep-{environment}"
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        from toolchain.sweep import read_rows

        report = json.loads((out / f"summary{args.tag}.json").read_text())
        rows_by_model = {n: sorted(read_rows(out / f"{n}{args.tag}"), key=lambda r: r["key"]) for n in report["models"]}
        pareto_plot(rows_by_model, out / f"pareto{args.tag}.png")
        (out / f"summary{args.tag}.md").write_text(markdown(report, rows_by_model))
        print((out / f"summary{args.tag}.md").read_text())
        return
    rows_by_model, report = {}, {"command": " ".join(["benchmarks/budget_sweep.py", *__import__("sys").argv[1:]]),
                                 "fingerprint": fingerprint, "models": {}}
    for name in args.models.split(","):
        model_spec, shape, data_spec, steps = MODELS[name]
        start_s = time.perf_counter()
        weights, dense_accuracy = (None, None) if steps is None else train_briefly(name, steps)
        criteria = args.criteria if name == "demo" else args.other_criteria
        config = SweepConfig(model=model_spec, out=out / f"{name}{args.tag}", budgets=parse_budgets(args.budgets),
                             criteria=tuple(criteria.split(",")), allocators=tuple(args.allocators.split(",")),
                             target=spec, data=data_spec, weights=str(weights) if weights else None,
                             input_shape=shape, finetune_steps=args.finetune_steps, refine_rounds=args.refine_rounds,
                             workers=args.workers, saliency=SaliencyConfig(shapley_samples=args.shapley_samples),
                             db_path=str(Path("runs") / f"latency-sweep-{environment}.db"))
        rows = run_sweep(config, lambda message, n=name: print(f"[{n}] {message}", flush=True))
        rows_by_model[name] = rows
        meta = json.loads((out / f"{name}{args.tag}" / "sweep.json").read_text())
        report["models"][name] = {"model": model_spec, "input_shape": list(shape), "weights": str(weights),
                                  "train_steps": steps, "trained_accuracy": dense_accuracy,
                                  "dense_latency_ms": meta["dense_latency_ms"], "predictor": meta["predictor"],
                                  "predictor_heldout": meta["heldout_error"], "wall_s": round(time.perf_counter()
                                                                                              - start_s, 1),
                                  **summarise(rows)}
        (out / f"summary{args.tag}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report["models"][name], indent=1), flush=True)
    pareto_plot(rows_by_model, out / f"pareto{args.tag}.png")
    (out / f"summary{args.tag}.md").write_text(markdown(report, rows_by_model))
    print(f"wrote {out}/summary{args.tag}.json, .md and pareto{args.tag}.png")


if __name__ == "__main__":
    main()
