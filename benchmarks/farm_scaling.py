"""Campaign wall time on a loopback device farm with 1 vs 2 device servers, measured in one run.

    python -m benchmarks.farm_scaling --model zoo:demo --samples 16 --repeats 2 [--out benchmarks/results]

One loopback farm with one device server and one with two (TVM tracker + servers, 127.0.0.1 only) are started
once; each repeat then runs the same campaign into a fresh database on each, the order alternating (1 then 2,
then 2 then 1) so that a drift in the machine's load falls on both alike. Each run records its wall time
(perf_counter around `run_campaign`, the farm already up), the CPU seconds of the host (this process: build,
compile, RPC client; plus its finished children: the compiler linking each library) and of the boards (the
tracker and device servers with their finished session processes, read from /proc), the load average before
and after, and the rows each board timed. The row reported is the ratio wall(1 board) / wall(2 boards) per
repeat and its median.

The loopback "boards" are processes on this machine: two of them share its cores with each other and with the
host's builds, so on a 2-core shared machine little gain is expected; on real boards timing runs on the boards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import tempfile
import time
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.rpc import loopback_cluster


def environment() -> dict:
    from benchmarks.sparse_kernels import cpu_model_name

    return {"cpu": cpu_model_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "apache_tvm": version("apache-tvm"), "torch": version("torch").split("+")[0]}


def boards_cpu_s() -> float:
    """CPU seconds of every live process below this one (the farms) and of their finished, reaped children."""
    import psutil  # the tvm extra's, which the farm needs anyway

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            used = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += used.user + used.system + used.children_user + used.children_system
    return total


def host_cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children: the compiler, not the farms
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_campaign(endpoint, model: str, samples: int, db_path: str) -> dict:
    config = CampaignConfig(model=model, db_path=db_path, backend="tvm", samples=samples, rpc=endpoint)
    load_before = os.getloadavg()
    host_start, boards_start, wall_start = host_cpu_s(), boards_cpu_s(), time.perf_counter()
    report = run_campaign(config)
    wall_s = time.perf_counter() - wall_start
    return {"wall_s": round(wall_s, 2), "host_cpu_s": round(host_cpu_s() - host_start, 2),
            "boards_cpu_s": round(boards_cpu_s() - boards_start, 2), "measured": report.measured,
            "failed": len(report.failed), "rows_per_board": report.devices,
            "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zoo:demo")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--port", type=int, default=9390, help="first tracker port of the two farms")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    runs = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        farms = {boards: stack.enter_context(loopback_cluster(f"bench-{boards}", args.port + 1000 * i, boards))
                 for i, boards in enumerate((1, 2))}
        for repeat in range(args.repeats):
            for boards in (1, 2) if repeat % 2 == 0 else (2, 1):
                db_path = str(Path(tmp) / f"r{repeat}-b{boards}.db")
                run = timed_campaign(farms[boards].endpoint, args.model, args.samples, db_path)
                runs.append({"repeat": repeat, "boards": boards, **run})
                print(json.dumps(runs[-1]), flush=True)
    ratios = [next(r["wall_s"] for r in runs if r["repeat"] == k and r["boards"] == 1)
              / next(r["wall_s"] for r in runs if r["repeat"] == k and r["boards"] == 2) for k in range(args.repeats)]
    info = environment()
    result = {"command": f"python -m benchmarks.farm_scaling --model {args.model} --samples {args.samples} "
                         f"--repeats {args.repeats}",
              "environment": info,
              "clock": "wall (perf_counter) per campaign; CPU seconds of the host and of the farms' processes",
              "runs": runs, "wall_ratio_1_over_2": [round(r, 3) for r in ratios],
              "median_wall_ratio_1_over_2": round(statistics.median(ratios), 3)}
    cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    name = f"farm-scaling-{cpu}-tvm{info['apache_tvm']}-{re.sub(r'[^a-z0-9]+', '-', args.model.lower())}"
    out = Path(args.out) / f"{name}-s{args.samples}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".json.tmp")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(out)
    print(f"wrote {out}: wall(1 board) / wall(2 boards) = {result['wall_ratio_1_over_2']}")


if __name__ == "__main__":
    main()
