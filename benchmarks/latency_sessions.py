"""Session-to-session noise: the same configurations measured in two campaigns (two databases).

python benchmarks/latency_sessions.py runs/latency-bench.db runs/latency.db --model zoo:resnet18
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from latency_models.store import MeasurementStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first_db")
    parser.add_argument("second_db")
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    medians = []
    for path in (args.first_db, args.second_db):
        with MeasurementStore(path, create=False) as store:
            medians.append({r.config_key: r.median_ms for r in store.rows(args.model) if r.replicate == 0})
    common = sorted(set(medians[0]) & set(medians[1]))
    ratio = np.array([medians[1][k] / medians[0][k] for k in common])
    deviation = np.abs(ratio - 1)
    print(
        json.dumps(
            {
                "model": args.model,
                "configurations": len(common),
                "median_ratio_second_over_first": float(np.median(ratio)),
                "median_abs_dev_pct": float(100 * np.median(deviation)),
                "p90_abs_dev_pct": float(100 * np.percentile(deviation, 90)),
                "within_5pct": float((deviation <= 0.05).mean()),
                "within_10pct": float((deviation <= 0.10).mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
