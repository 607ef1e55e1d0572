"""Benchmark: when the time-bounded distillation may stop early, on one pruned demo model, over seeds.

`make deploy` recovers the half-latency demo by distillation bounded by 90 s, with early stops (dense
calibration accuracy reached, or a plateau). This script takes one pruned-model folder, made once with

    toolchain prune --model zoo:demo --budget-ratio 0.5 --no-recover --out /tmp/demo_pruned

and recovers copies of it with `toolchain.recover.recover` under `RecoveryConfig` variants and seeds (the
training order), writing one JSON row per run: test accuracy, steps, stop reason, seconds.

    PYTHONPATH=. python benchmarks/recovery_early_stop.py --pruned /tmp/demo_pruned --seeds 0,1,2,3,4 \
        --out benchmarks/results/recovery-early-stop-demo.jsonl

Variants: `from-start` (early stops allowed from the first check: the behaviour before the tenth session,
`early_stop_after=0`), `default` (`RecoveryConfig()`), `no-early-stop` (only the time bound ends the run).
Wall-clock bound: the step count depends on the machine's load, so the load is recorded with each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from toolchain import load_pruned, resolve_model
from toolchain.data import load_mnist5k
from toolchain.recover import RecoveryConfig, recover

VARIANTS = {
    "from-start": RecoveryConfig(early_stop_after=0.0),
    "default": RecoveryConfig(),
    "no-early-stop": RecoveryConfig(early_stop_after=1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruned", required=True, help="a pruned demo folder (toolchain prune ... --no-recover)")
    parser.add_argument("--variants", default="from-start,default")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", required=True, help="JSON lines, appended")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    data, dense = load_mnist5k(), resolve_model("zoo:demo")[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        for seed in (int(s) for s in args.seeds.split(",")):
            pruned, _ = load_pruned(args.pruned)
            torch.manual_seed(seed)
            config = dataclasses.replace(VARIANTS[variant], seed=seed)
            start = time.perf_counter()
            done = recover(pruned, dense, data, config)
            report = done["recovery"]
            row = {"variant": variant, "seed": seed, "early_stop_after": config.early_stop_after,
                   "seconds_limit": config.seconds, "dense_accuracy": done["dense_accuracy"],
                   "accuracy_after_bn_recalibration": done["accuracy_after_bn_recalibration"],
                   "accuracy": done["accuracy"], "steps": report["steps"], "stop_reason": report["stop_reason"],
                   "calib_accuracy_after": report["calib_accuracy_after"],
                   "dense_calib_accuracy": report["dense_calib_accuracy"],
                   "seconds": round(time.perf_counter() - start, 1), "load_average_1m": os.getloadavg()[0],
                   "machine": f"{platform.processor() or platform.machine()} {os.cpu_count()} CPUs",
                   "torch": torch.__version__, "pruned": str(args.pruned)}
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
