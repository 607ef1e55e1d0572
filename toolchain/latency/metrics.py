"""How well predicted latencies match measured ones: MAPE, share within ±5% / ±10%, Spearman rank correlation.

Example:
    >>> accuracy_metrics([10.0, 20.0], [10.5, 19.0])["within_10pct"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy_metrics(measured_ms: Sequence[float], predicted_ms: Sequence[float]) -> dict[str, float | None]:
    """Scores of predictions against measurements (Spearman is None below 3 configurations)."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    predicted = np.asarray(predicted_ms, dtype=np.float64)
    if measured.size == 0:
        raise ValueError("no configurations to score")
    relative_error = np.abs(predicted - measured) / measured
    from scipy.stats import spearmanr  # imported here: scipy.stats costs every CLI call 0.9 s at import

    spearman = float(spearmanr(measured, predicted).statistic) if measured.size > 2 else None
    return {
        "n": int(measured.size),
        "mape_pct": float(100 * relative_error.mean()),
        "within_5pct": float((relative_error <= 0.05).mean()),
        "within_10pct": float((relative_error <= 0.10).mean()),
        "max_error_pct": float(100 * relative_error.max()),
        "spearman": spearman,
    }
