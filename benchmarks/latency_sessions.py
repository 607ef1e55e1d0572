"""Session-to-session noise: the same configurations measured in two campaigns (two databases).

python benchmarks/latency_sessions.py runs/latency-bench.db runs/latency.db --model zoo:resnet18 [--statistic min]

With `--lpnet ARTIFACT` it also scores that predictor (fitted on the first database's session) on every
configuration of the second session, and on its held-out configurations (the 20% split of `toolchain fit`):
measurements from a session the predictor never saw, the way a deployment meets it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from toolchain.latency.measure import STATISTICS, latency_ms
from toolchain.latency.store import MeasurementStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first_db")
    parser.add_argument("second_db")
    parser.add_argument("--model", required=True)
    parser.add_argument("--statistic", default="median", choices=STATISTICS)
    parser.add_argument("--lpnet", help="predictor artifact to score on the second session's configurations")
    args = parser.parse_args()
    sessions, rows = [], []
    for path in (args.first_db, args.second_db):
        with MeasurementStore(path, create=False) as store:
            found = [r for r in store.rows(args.model) if r.replicate == 0 and r.kind == "model"]
        rows.append(found)
        sessions.append({r.config_key: latency_ms(r, args.statistic) for r in found})
    common = sorted(set(sessions[0]) & set(sessions[1]))
    ratio = np.array([sessions[1][k] / sessions[0][k] for k in common])
    deviation = np.abs(ratio - 1)
    scored = {}
    if args.lpnet:
        from toolchain.latency.predictors import LatencyQuery, load_predictor

        predictor = load_predictor(args.lpnet)
        from toolchain.latency.fitting import is_heldout

        queries = [LatencyQuery.from_row(r, args.statistic) for r in rows[1]]
        heldout = [q for q in queries if is_heldout(q.config_key, 0.2)]  # never trained on, in either session
        scored = {"predictor": args.lpnet, "on_second_session": predictor.evaluate(queries),
                  "on_second_session_heldout_configurations": predictor.evaluate(heldout)}
    print(
        json.dumps(
            {
                "model": args.model,
                "statistic": args.statistic,
                **scored,
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
