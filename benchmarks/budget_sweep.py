"""Benchmark: pruning under a latency budget on cpu/onnxruntime, measured, over seeds.

Does choosing per-layer widths through the latency predictor (`lpnet`, `knapsack`) keep more accuracy than
latency-blind pruning at the same measured latency? For each model (the demo on MNIST-5k; ResNet-56 (CIFAR
layout) and MobileNetV2 at small inputs, trained briefly here on MNIST-5k resized to 3 channels) and each seed
(the calibration subset and the training order, `toolchain.sweep.reseeded`) it runs:

* the toolchain's budget sweep (`toolchain.sweep`, one criterion) for the allocators `lpnet`, `knapsack`,
  `uniform` and `macs`, every point measured on the target;
* Torch-Pruning's own global pruner (`sweep_anchor`, magnitude and Taylor importance) stepped until the same
  measured latency on the same measurement;

every point recovered alike (BN re-calibration, then `--finetune-steps` of distillation). It reports, per
point, mean and 95 % Student-t intervals over seeds, and compares methods by the area between their
accuracy-vs-measured-latency curves over the common measured range, with a seed-paired interval.

Results go to benchmarks/results/sweep-seeds-<environment>/ (rows per model and seed, summary.json,
summary.md, curves.png). Resumable: finished points are skipped. Do not wrap this in `flock`: every
measurement takes /tmp/toolchain-bench.lock itself.

    python -m benchmarks.budget_sweep --models demo --seeds 1,2,3 --budgets 0.35,0.5,0.65,0.8
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
from toolchain.sweep import read_jsonl

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


# -- the seeded sweep -------------------------------------------------------------------------------------------
ANCHOR_ROWS = "anchor-rows.jsonl"


def run_anchors(name: str, folder: Path, seed: int, args, spec, weights, step) -> None:
    """Torch-Pruning's global pruner for each importance in `--anchors`, the budgets not yet in the folder."""
    from benchmarks.sweep_anchor import AnchorConfig, method_name, run_anchor
    from toolchain.data import resolve_data
    from toolchain.latency.timing import target_measure
    from toolchain.models import resolve_model
    from toolchain.sweep import reseeded

    model_spec, shape, data_spec, _ = MODELS[name]
    done = {(r["method"], r["budget_ratio"]) for r in read_jsonl(folder / ANCHOR_ROWS)}
    for importance in filter(None, args.anchors.split(",")):
        config = AnchorConfig(importance, finetune_steps=args.finetune_steps)
        budgets = tuple(b for b in args.budget_ratios if (method_name(config), b) not in done)
        if not budgets:
            continue
        torch.manual_seed(seed)
        dense, _ = resolve_model(model_spec, str(weights) if weights else None, shape)
        data = reseeded(resolve_data(data_spec, model_spec), seed)
        dense_ms = json.loads((folder / "sweep.json").read_text())["dense_latency_ms"]
        rows = run_anchor(dense, torch.randn(*shape), data, config, budgets, dense_ms, target_measure(spec), step)
        with open(folder / ANCHOR_ROWS, "a") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "seed": seed}) + "\n")


CORRECTED_SUFFIX = "-corrected"
RECOVERY_CHECKED_SUFFIX = "-rchecked"
SELECTED_SUFFIX = "-selected"
# Variants of the toolchain's allocators, each in its own folder inside the seed's:
# method suffix -> (folder, the option listing its allocators, config changes; None: the sweep's --finetune-steps)
VARIANTS = {CORRECTED_SUFFIX: ("corrected", "corrected", {"correct_predictor": True}),
            RECOVERY_CHECKED_SUFFIX: ("rchecked", "recovery_checked", {"check_recovery_steps": None}),
            SELECTED_SUFFIX: ("selected", "selected", {"recovered_selection_steps": None})}


def variant_config(config, allocators: list[str], suffix: str):
    """The seed's sweep as a variant (`VARIANTS`: the predictor corrected by each search's tries, or the
    calibration check scored after recovery) in `<seed folder>/<variant>`; the seed's dense timing is copied
    there first, so all share one budget in ms."""
    from dataclasses import replace

    name, _, changes = VARIANTS[suffix]
    folder = Path(config.out) / name
    folder.mkdir(exist_ok=True)
    if not (folder / "sweep.json").is_file():
        (folder / "sweep.json").write_text((Path(config.out) / "sweep.json").read_text())
    changes = {k: config.finetune_steps if v is None else v for k, v in changes.items()}
    return replace(config, out=folder, allocators=tuple(allocators), **changes)


def collect_rows(model_folder: Path) -> list[dict]:
    """Every seed's rows, toolchain and anchor, with `method` (the allocator for toolchain rows) and `seed`."""
    from toolchain.sweep import read_rows

    rows = []
    for folder in sorted(model_folder.glob("seed*")):
        seed = int(folder.name[4:])
        rows += [{**r, "method": r["allocator"], "seed": seed} for r in read_rows(folder)]
        for suffix, (name, _, _) in VARIANTS.items():
            if (folder / name).is_dir():
                rows += [{**r, "method": r["allocator"] + suffix, "seed": seed} for r in read_rows(folder / name)]
        anchors = {(r["method"], r["budget_ratio"]): r for r in read_jsonl(folder / ANCHOR_ROWS)}  # last one wins
        rows += [{**r, "seed": seed} for r in anchors.values()]
    return rows


def _record_session(folder: Path, start_s: float, start_cpu_s: float, load_before: tuple) -> None:
    """Append this process's time on one model and seed to the seed folder's `sessions.json` (a resumed seed has
    several). Per folder, so processes running other seeds side by side never overwrite each other's."""
    import os

    path = folder / "sessions.json"
    sessions = json.loads(path.read_text()) if path.is_file() else []
    sessions.append({"wall_s": round(time.perf_counter() - start_s, 1),
                     "process_cpu_s": round(time.process_time() - start_cpu_s, 1),
                     "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg(),
                     "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sessions, indent=1) + "\n")
    tmp.replace(path)


def write_report(out: Path, report: dict) -> None:
    import os

    from benchmarks.sweep_report import markdown as tables
    from benchmarks.sweep_report import plot, summarise

    for name, model in report["models"].items():
        model["summary"] = summarise(collect_rows(out / name), model["methods"])
        model["sessions"] = {folder.parent.name: json.loads(folder.read_text())
                             for folder in sorted((out / name).glob("seed*/sessions.json"))}
    tmp = out / f"summary.json.{os.getpid()}.tmp"  # processes running other seeds may write beside this one
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out / "summary.json")
    (out / "summary.md").write_text(tables(report))
    plot(report, out / "curves.png")


def refined_predictor(name: str, spec, environment: str, rounds: int, weights: Path | None) -> tuple[str, dict]:
    """The model's sweep predictor (found or built as a sweep would), refined on the allocators' choices:
    `<predictor>-refined<rounds>` next to it, built once and reused."""
    from toolchain.inputs import make_inputs, specs_key, specs_of, vocab_size_of
    from toolchain.latency.provision import find_or_build_predictor, profile_db_for
    from toolchain.latency.refine import RefineConfig, refine_on_allocations
    from toolchain.models import resolve_model

    model_spec, shape, _, _ = MODELS[name]
    db_path = str(Path("runs") / f"latency-sweep-{environment}.db")
    dense, specs = resolve_model(model_spec, None, shape)
    input_key = specs_key(specs_of(make_inputs(specs, vocab_size_of(dense))))
    base = find_or_build_predictor(model_spec, dense, input_key, spec, None, db_path,
                                   step=lambda m: print(f"[{name}] {m}", flush=True))
    out = f"{base.artifact}-refined{rounds}"
    summary_path = Path(out) / "refinement.json"
    if not summary_path.is_file():
        summary = refine_on_allocations(RefineConfig(model_spec, input_key, spec, base.artifact,
                                                     profile_db_for(spec, db_path), out, rounds=rounds,
                                                     weights=str(weights) if weights else None),
                                        step=lambda m: print(f"[{name}] {m}", flush=True))
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return out, json.loads(summary_path.read_text())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet56,mobilenet_v2")
    parser.add_argument("--seeds", default="1,2,3", help="each: calibration subset + training order")
    parser.add_argument("--budgets", default="0.35,0.5,0.65,0.8")
    parser.add_argument("--criterion", default="taylor", help="the toolchain allocators' saliency criterion")
    parser.add_argument("--allocators", default="lpnet,knapsack,uniform,macs")
    parser.add_argument("--anchors", default="magnitude,taylor", help="Torch-Pruning importances ('' for none)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="the same for every method")
    parser.add_argument("--profile-samples", type=int, default=60)
    parser.add_argument("--refine-rounds", type=int, default=1)
    parser.add_argument("--corrected", default="",
                        help="allocators also run with BudgetConfig.correct_predictor (the predictor corrected by "
                             "each search's own measured tries), as methods '<allocator>-corrected', in "
                             "seed<k>/corrected/ with the seed's dense timing")
    parser.add_argument("--recovery-checked", default="",
                        help="allocators also run with BudgetConfig.check_recovery_steps = --finetune-steps (the "
                             "calibration check scores its candidates after that recovery), as methods "
                             "'<allocator>-rchecked', in seed<k>/rchecked/ with the seed's dense timing")
    parser.add_argument("--selected", default="",
                        help="allocators also run with BudgetConfig.recovered_selection_steps = --finetune-steps (the "
                             "uniform allocation searched under the same budget too, the one recovering better on "
                             "calibration data kept), as methods '<allocator>-selected', in seed<k>/selected/")
    parser.add_argument("--refine-predictor", type=int, default=0,
                        help="rounds of timing the allocators' choices under the predictor and refitting it "
                             "(toolchain.latency.refine) before the seeds run; 0: the sampled-only predictor")
    parser.add_argument("--clock", default="thread_cpu")
    parser.add_argument("--statistic", default="min", choices=STATISTICS,
                        help="a measurement's latency (min: robust to the other jobs on a shared machine)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="rewrite the summary and plot from the rows")
    parser.add_argument("--anchors-only", action="store_true",
                        help="only the Torch-Pruning anchors (the seed's toolchain sweep must have timed the dense "
                             "model): another process can run them beside the toolchain's points")
    return parser


def main() -> None:
    import os
    import sys

    from toolchain.latency.fingerprint import machine_fingerprint
    from toolchain.sweep import SweepConfig, parse_budgets, run_sweep
    from toolchain.targets import Target

    args = _parser().parse_args()
    args.budget_ratios = parse_budgets(args.budgets)
    torch.set_num_threads(1)
    spec = Target("cpu", "onnxruntime", 1, args.clock, args.statistic, warmup_runs=2, timed_runs=15,
                  profile_samples=args.profile_samples)
    fingerprint = machine_fingerprint(spec.resolve())
    environment = (f"{fingerprint.get('cpu_model', 'cpu').split()[0].lower()}-{platform.machine()}-"
                   f"ort{fingerprint['versions'].get('onnxruntime', '?')}-1t-{args.clock}-{args.statistic}")
    out = args.out or HERE.parent / "results" / f"sweep-seeds-{environment}"
    out.mkdir(parents=True, exist_ok=True)
    variants = {suffix: [a for a in getattr(args, option).split(",") if a]
                for suffix, (_, option, _) in VARIANTS.items()}
    methods = [*args.allocators.split(","), *(f"{a}{suffix}" for suffix, names in variants.items() for a in names),
               *(f"tp-{a}" for a in args.anchors.split(",") if a)]
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    report = {"command": " ".join(["python -m benchmarks.budget_sweep", *sys.argv[1:]]), "fingerprint": fingerprint,
              "models": previous.get("models", {})}
    for name in args.models.split(","):  # a folder accumulates runs: an anchors-only run keeps the variants
        entry = report["models"].setdefault(name, {"input_shape": list(MODELS[name][1])})
        entry["methods"] = list(dict.fromkeys([*entry.get("methods", []), *methods]))
    if args.report_only:
        write_report(out, report)
        print((out / "summary.md").read_text())
        return
    for name in args.models.split(","):
        model_spec, shape, data_spec, steps = MODELS[name]
        weights, _ = (None, None) if steps is None else train_briefly(name, steps)
        predictor = None
        if args.refine_predictor:
            predictor, refinement = refined_predictor(name, spec, environment, args.refine_predictor, weights)
            report["models"][name]["predictor_refinement"] = refinement
        for seed in (int(s) for s in args.seeds.split(",")):
            start_s, start_cpu_s, load_before = time.perf_counter(), time.process_time(), os.getloadavg()

            def step(message: str, n: str = name, s: int = seed) -> None:
                print(f"[{n} s{s}] {message}", flush=True)

            config = SweepConfig(model=model_spec, out=out / name / f"seed{seed}", budgets=args.budget_ratios,
                                 criteria=(args.criterion,), allocators=tuple(args.allocators.split(",")),
                                 target=spec, data=data_spec, weights=str(weights) if weights else None,
                                 input_shape=shape, finetune_steps=args.finetune_steps,
                                 refine_rounds=args.refine_rounds, seed=seed, predictor=predictor,
                                 db_path=str(Path("runs") / f"latency-sweep-{environment}.db"))
            if not args.anchors_only:
                run_sweep(config, step)
                for suffix, names in variants.items():
                    if names:
                        run_sweep(variant_config(config, names, suffix), step)
            run_anchors(name, config.out, seed, args, spec, weights, step)
            _record_session(config.out, start_s, start_cpu_s, load_before)
            write_report(out, report)
    print(f"wrote {out}/summary.json, summary.md and curves.png")


if __name__ == "__main__":
    main()
