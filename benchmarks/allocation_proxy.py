"""Diagnostic: at equal predicted latency, which allocator's widths lose the least before any recovery?

The sweep compares methods after recovery. This isolates the allocation itself: for each seed (calibration
subset, as in the sweep) and budget, every allocator allocates on the same problem (the sweep's criterion,
sensitivity probes and predictor), and each allocation is scored by its own estimate (`problem.loss`) and by
the true loss of the masked dense model (BatchNorm on batch statistics) on the calibration batch the
calibration check uses and on 500 held-out test images. No latency is measured, nothing is fine-tuned.

    python -m benchmarks.allocation_proxy --seeds 1,2,3 --budgets 0.35,0.5,0.65
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

HERE = Path(__file__).resolve()


def rows_for_seed(seed: int, budgets: tuple[float, ...], allocators: tuple[str, ...], criterion: str,
                  spec) -> list[dict]:
    from toolchain.allocate import BudgetConfig, allocate, build_problem
    from toolchain.budget import _macs_counter, score_model, target_providers
    from toolchain.data import load_mnist5k
    from toolchain.inputs import make_inputs
    from toolchain.models import resolve_model
    from toolchain.saliency import SaliencyConfig
    from toolchain.saliency.probe import masked_loss
    from toolchain.sweep import reseeded

    dense, specs = resolve_model("zoo:demo", None, None)
    example_input = make_inputs(specs)
    data = reseeded(load_mnist5k(), seed)
    predictor = target_providers(spec).predictor("zoo:demo", dense, example_input, lambda _: None)
    saliency = SaliencyConfig()
    scored = score_model(dense, example_input, criterion, (), data, saliency)
    config = BudgetConfig(budget_ratio=0.5)  # only its floors and hardware multiple are read
    problem = build_problem(scored.graph.groups, scored.scores, predictor.latency, config.round_to,
                            config.min_keep_ratio, config.sensitive_keep_ratio, scored.sensitivity,
                            saliency.probe_keep_ratio, _macs_counter(dense, example_input, ()))
    dense_ms = problem.predicted_ms(problem.dense())
    held_out = Subset(data.test, range(500))
    rows = []
    for ratio in budgets:
        for allocator in allocators:
            widths = allocate(allocator, problem, ratio * dense_ms)
            rows.append({"seed": seed, "budget_ratio": ratio, "allocator": allocator, "criterion": criterion,
                         "predicted_ratio": round(problem.predicted_ms(widths) / dense_ms, 4),
                         "estimated_loss": round(problem.loss(widths), 4),
                         "calib_masked_loss": round(masked_loss(scored.model, scored.graph, scored.scores, widths,
                                                                data.calib), 4),
                         "test_masked_loss": round(masked_loss(scored.model, scored.graph, scored.scores, widths,
                                                               held_out, batch_size=500), 4),
                         "widths": widths})
    return rows


def main() -> None:
    from toolchain.sweep import parse_budgets
    from toolchain.targets import Target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--budgets", default="0.35,0.5,0.65")
    parser.add_argument("--allocators", default="lpnet,knapsack,uniform,macs")
    parser.add_argument("--criterion", default="taylor")
    parser.add_argument("--profile-samples", type=int, default=60, help="the sweep's predictor (reused)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "allocation-proxy-demo.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = Target("cpu", "onnxruntime", 1, "thread_cpu", "min", warmup_runs=2, timed_runs=15,
                  profile_samples=args.profile_samples)
    done = {json.loads(line)["seed"] for line in args.out.read_text().splitlines()} if args.out.is_file() else set()
    for seed in (int(s) for s in args.seeds.split(",")):
        if seed in done:
            continue
        start_cpu_s = time.process_time()
        rows = rows_for_seed(seed, parse_budgets(args.budgets), tuple(args.allocators.split(",")), args.criterion,
                             spec)
        with open(args.out, "a") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "process_cpu_s": round(time.process_time() - start_cpu_s, 1)}) + "\n")
        print(f"seed {seed}: {len(rows)} rows", flush=True)


if __name__ == "__main__":
    main()
