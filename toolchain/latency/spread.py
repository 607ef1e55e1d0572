"""How much boards of one kind differ (clocks, thermal state): the same configurations timed on every board of
a farm (`toolchain profile --spread-configs K`), summarised as one offset per board.

A board's offset is the median, over the configurations every board timed, of its latency relative to the
boards' mean for that configuration (+0.03: 3% slower than the average board). Its 95% interval comes from a
seeded percentile bootstrap over those configurations; an offset *matters* when its interval leaves out 0,
i.e. the board differs by more than the timing noise shows. One predictor serves a kind of board; a board
whose offset matters is predicted as `predicted_ms * (1 + offset)`.

Example:
    >>> timings = [DeviceTiming("c1", "a:1", "f", 1.0, 1.0), DeviceTiming("c1", "b:2", "f", 1.2, 1.2)]
    >>> board_spread(timings, resamples=0)["offsets"]
    {'a:1': -0.0909, 'b:2': 0.0909}
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from toolchain.latency.measure import check_statistic
from toolchain.latency.store import DeviceTiming

DIGITS = 4  # relative offsets to 0.01%


def board_spread(timings: list[DeviceTiming], statistic: str = "min", resamples: int = 1000,
                 seed: int = 0) -> dict:
    """Per-board offsets over the configurations timed on every board; {} with fewer than two boards."""
    check_statistic(statistic)
    by_config: dict[str, dict[str, float]] = defaultdict(dict)
    for timing in timings:
        by_config[timing.config_key][timing.device] = timing.min_ms if statistic == "min" else timing.median_ms
    boards = sorted({timing.device for timing in timings})
    common = [ms for ms in by_config.values() if len(ms) == len(boards)]
    if len(boards) < 2 or not common:
        return {}
    latencies = np.array([[ms[board] for board in boards] for ms in common])  # configurations x boards
    relative = latencies / latencies.mean(axis=1, keepdims=True) - 1.0
    offsets = np.median(relative, axis=0)
    intervals = _bootstrap(relative, resamples, seed)
    return {
        "statistic": statistic,
        "configs": len(common),
        "offsets": {board: round(float(o), DIGITS) for board, o in zip(boards, offsets, strict=True)},
        "intervals_95": {board: [round(float(lo), DIGITS), round(float(hi), DIGITS)]
                         for board, (lo, hi) in zip(boards, intervals, strict=True)},
        "spread": round(float(offsets.max() - offsets.min()), DIGITS),  # slowest board's offset - fastest's
        "matters": any(lo > 0 or hi < 0 for lo, hi in intervals),
    }


def _bootstrap(relative: np.ndarray, resamples: int, seed: int) -> list[tuple[float, float]]:
    """95% percentile interval of each board's median offset, resampling configurations (seeded)."""
    if resamples < 1 or len(relative) < 2:
        return [(float(o), float(o)) for o in np.median(relative, axis=0)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(relative), size=(resamples, len(relative)))
    medians = np.median(relative[picks], axis=1)  # resamples x boards
    low, high = np.percentile(medians, [2.5, 97.5], axis=0)
    return list(zip(low.tolist(), high.tolist(), strict=True))


def board_offset(spread: dict, device: str) -> float:
    """The relative offset to apply to a prediction for `device`: its own where it matters, else 0."""
    if not spread or not spread.get("matters"):
        return 0.0
    low, high = spread["intervals_95"].get(device, (0.0, 0.0))
    return spread["offsets"][device] if low > 0 or high < 0 else 0.0
