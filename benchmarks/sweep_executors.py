"""One sweep command run with `--executor local` and `--executor ray`, alternately: wall time, CPU seconds, load.

The point is not speed (Ray on 2 cores has nothing to gain) but that the same command runs on a cluster and
writes the same rows. Each run gets a fresh --out; the predictor is reused from runs/predictors (build it
first with one run of the same command). CPU seconds are those of the processes this script reaped (the CLI
and what it waited for: with Ray, workers a raylet did not reap are missing), so compare wall times only on
an idle machine; the load average before and after each run is recorded.

    python -m benchmarks.sweep_executors --repeats 2 -- --model zoo:demo --budgets 0.5,0.7 --criteria l1,l2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _run(executor: str, sweep_args: list[str]) -> dict:
    out = tempfile.mkdtemp(prefix=f"sweep-{executor}-")
    command = [sys.executable, "-m", "toolchain", "sweep", *sweep_args, "--executor", executor, "--out", out,
               "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before, start_s = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall_s = time.perf_counter() - start_s
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = json.loads((Path(out) / "rows.json").read_text()) if done.returncode == 0 else []
    return {"executor": executor, "returncode": done.returncode, "wall_s": round(wall_s, 1),
            "reaped_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "load1_before": load_before, "load1_after": os.getloadavg()[0], "points": len(rows),
            "errors": sum(row["error"] is not None for row in rows), "stdout": done.stdout.strip(),
            "stderr_tail": done.stderr.strip()[-300:],
            "rows": [{k: row.get(k) for k in ("key", "measured_latency_ms", "per_layer_widths")} for row in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("sweep_args", nargs=argparse.REMAINDER, help="after --: the sweep's own options")
    args = parser.parse_args()
    sweep_args = [a for a in args.sweep_args if a != "--"]
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = [_run(executor, sweep_args) for _ in range(args.repeats) for executor in ("local", "ray")]
    environment = f"{platform.machine()}-{os.cpu_count()}cpu"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sweep-executors-{environment}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"command_args": sweep_args, "host": platform.node(),
                                     "started_utc": started_utc,
                                     "runs": runs}, indent=1) + "\n")
    temporary.replace(path)
    for run in runs:
        print(f"{run['executor']:5s} rc={run['returncode']} wall {run['wall_s']} s, "
              f"reaped CPU {run['reaped_cpu_s']} s, "
              f"load {run['load1_before']:.1f}->{run['load1_after']:.1f}, {run['points']} points, "
              f"{run['errors']} errors")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
