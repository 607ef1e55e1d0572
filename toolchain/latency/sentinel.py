"""Timing configurations in chunks next to a sentinel, so that a chunk timed in a slow spell is timed again.

On a shared host (this project's CI machine is a 2-vCPU VM) the machine's speed drifts: most runs are a few
per cent above the quiet floor, and now and then every run is 10-50% slower for seconds or minutes. Taking
the minimum of many runs removes the first kind; two attempts that agree (MeasureConfig.statistic="min")
remove slow spells shorter than the gap between them. Spells that outlast a whole chunk are caught by the
sentinel: the dense model is timed in every chunk's rounds like any configuration, and a chunk whose
sentinel was more than `tolerance` slower than the sentinel's best so far was timed in a slow spell.

Example:
    >>> check = SentinelCheck(tolerance=0.05)
    >>> check.observe(10.0), check.observe(12.0), check.observe(10.2)
    (True, False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from toolchain.latency.measure import MeasureConfig, Measurement, latency_ms, measure_interleaved
from toolchain.targets import Runner


@dataclass
class SentinelCheck:
    """The sentinel's best latency so far, and whether a chunk's sentinel latency is within tolerance of it."""

    tolerance: float = 0.05
    best_ms: float | None = None

    def observe(self, sentinel_ms: float) -> bool:
        """Record one chunk's sentinel latency; True when the chunk ran at (near) the quiet speed."""
        self.best_ms = sentinel_ms if self.best_ms is None else min(self.best_ms, sentinel_ms)
        return self.is_quiet(sentinel_ms)

    def is_quiet(self, sentinel_ms: float) -> bool:
        """Judged against the best so far: a chunk that looked quiet early can look slow later."""
        return self.best_ms is not None and sentinel_ms <= self.best_ms * (1.0 + self.tolerance)


def time_chunk(
    sentinel: Runner, runners: Sequence[Runner], config: MeasureConfig, clock: Callable[[], float] | None = None
) -> tuple[list[Measurement | Exception], float]:
    """Time `runners` interleaved with the sentinel; their measurements (or errors), and the sentinel's latency
    (by `config.statistic`) in this chunk."""
    errors: dict[int, Exception] = {}

    def record_error(index: int, error: Exception) -> None:
        if index == 0:  # the dense model itself failing is not one configuration's problem
            raise error
        errors[index] = error

    results = measure_interleaved([sentinel, *runners], config, clock, on_error=record_error)
    sentinel_ms = latency_ms(results[0], config.statistic)
    return [errors.get(i, result) for i, result in enumerate(results) if i > 0], sentinel_ms
