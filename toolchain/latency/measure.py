"""Timing harness: warm-up, repeated timed runs, median and spread, re-measure when the spread is wide.

Example:
    >>> runner = get_target("cpu").prepare(model, example_input)
    >>> m = measure(runner, MeasureConfig(warmup_runs=3, timed_runs=20))
    >>> m.median_ms, m.iqr_ms, m.stable
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.targets import Runner, resolve_clock

# Host clocks, in seconds. `thread_cpu` counts only the CPU time of the calling thread: on a shared machine
# it leaves out the time other processes hold the core, which wall-clock time cannot. It is valid only where
# the whole inference runs on the calling thread (cpu target, 1 thread, onnxruntime or torch).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread_cpu": time.thread_time}
# The number that stands for "the latency" of a measurement. `min` (the default, toolchain.defaults) is the
# robust choice on a shared machine, where interference only ever adds time (on this project's 2-vCPU host the
# same configuration re-measured agrees far more often by its minimum than by its median; BENCHMARKS.md).
STATISTICS = ("median", "min")
MAX_TIMED_RUNS = 2000
IMPLAUSIBLY_FAST_SHARE = 0.25  # a run under this share of its attempt's median never sets the minimum


def check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise ToolchainError(f"unknown latency statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
    return statistic


def latency_ms(record, statistic: str = defaults.STATISTIC) -> float:
    """The latency in ms by `statistic` of anything with `median_ms` / `min_ms` (a Measurement, a stored row)."""
    return getattr(record, f"{check_statistic(statistic)}_ms")


@dataclass(frozen=True)
class MeasureConfig:
    """How one timing is taken; defaults from `toolchain.defaults` (`Target.measure_config()` fills it for a
    target, with the clock resolved)."""

    warmup_runs: int = defaults.WARMUP_RUNS
    timed_runs: int = defaults.TIMED_RUNS
    # Which latency the measurement is for (a name in STATISTICS); it decides when to stop re-measuring.
    # `median`: an attempt is done when its IQR / median is at most `max_relative_iqr`.
    # `min`: done when the two smallest attempt minima agree within `min_agreement` (relative). A burst of
    # interference that covers a whole attempt leaves its runs evenly slow (a small IQR), so only a second
    # attempt that agrees shows the minimum is the machine's and not the burst's.
    statistic: str = defaults.STATISTIC
    max_relative_iqr: float = 0.05
    min_agreement: float = 0.03
    max_attempts: int = 4
    # A key of CLOCKS, or `auto` (toolchain.targets.resolve_clock): with no target to resolve it against, the
    # harness reads `auto` as the wall clock, valid for every runner. Devices with their own timer ignore it.
    clock: str = defaults.CLOCK
    # Timed runs go on until they span at least this many ms (at most MAX_TIMED_RUNS): a sub-ms model's
    # 25 runs last a few ms, short enough for one burst of interference to cover all of them.
    min_timed_ms: float = defaults.MIN_TIMED_MS


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    iqr_ms: float  # interquartile range of the per-run times
    mad_ms: float  # median absolute deviation from the median
    min_ms: float
    mean_ms: float
    samples_ms: tuple[float, ...]  # the per-run times of the kept attempt
    attempts: int
    stable: bool

    def value(self, statistic: str = defaults.STATISTIC) -> float:
        """The latency in ms by `statistic` (a name in STATISTICS)."""
        return latency_ms(self, statistic)

    @property
    def relative_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")


def summarize(samples_ms: Sequence[float], attempts: int = 1, max_relative_iqr: float = 0.05) -> Measurement:
    """Statistics of one attempt's per-run times.

    >>> summarize([1.0, 2.0, 3.0, 4.0]).median_ms
    2.5
    """
    if len(samples_ms) == 0:
        raise ValueError("no timed runs to summarize")
    values = np.asarray(samples_ms, dtype=np.float64)
    median = float(np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    iqr = float(q3 - q1)
    # Interference only adds time; a run far faster than the attempt's median is the clock failing (a fresh
    # clone's `make deploy` once timed one run of 135 of a 0.75 ms model at 0.0 ms with the thread-CPU clock,
    # and that minimum became the stored latency). Such runs stay in the samples but never set the minimum.
    plausible = values[values >= IMPLAUSIBLY_FAST_SHARE * median]
    return Measurement(
        median_ms=median,
        iqr_ms=iqr,
        mad_ms=float(np.median(np.abs(values - median))),
        min_ms=float(plausible.min()),  # never empty: the median itself is plausible
        mean_ms=float(values.mean()),
        samples_ms=tuple(float(v) for v in values),
        attempts=attempts,
        stable=median > 0 and iqr / median <= max_relative_iqr,
    )


def _timed_runs_ms(runner: Runner, repeats: int, clock: Callable[[], float], min_timed_ms: float = 0.0) -> list[float]:
    device_times = runner.device_times_ms(repeats)
    if device_times is not None:
        times_ms = list(device_times)
        while sum(times_ms) < min_timed_ms and len(times_ms) < MAX_TIMED_RUNS:
            mean_ms = max(sum(times_ms) / len(times_ms), 1e-6)
            more = min(MAX_TIMED_RUNS - len(times_ms), max(1, math.ceil((min_timed_ms - sum(times_ms)) / mean_ms)))
            times_ms += list(runner.device_times_ms(more))
        return times_ms
    times_ms = []
    while len(times_ms) < repeats or (sum(times_ms) < min_timed_ms and len(times_ms) < MAX_TIMED_RUNS):
        start_s = clock()
        runner.run()
        times_ms.append((clock() - start_s) * 1e3)
    return times_ms


def _minima_agree(attempts: list[Measurement], tolerance: float) -> bool:
    if len(attempts) < 2:
        return False
    lowest, second = sorted(a.min_ms for a in attempts)[:2]
    return second <= lowest * (1.0 + tolerance)


def measure_attempt(runner: Runner, config: MeasureConfig, clock: Callable[[], float], attempt: int) -> Measurement:
    """One attempt: warm-up runs, then timed runs (at least `timed_runs`, spanning `min_timed_ms`)."""
    for _ in range(config.warmup_runs):
        runner.run()
    return summarize(
        _timed_runs_ms(runner, config.timed_runs, clock, config.min_timed_ms), attempt, config.max_relative_iqr
    )


def settle(attempts: list[Measurement], config: MeasureConfig) -> tuple[Measurement, bool]:
    """What the attempts so far amount to, and whether they are conclusive (see MeasureConfig.statistic)."""
    if config.statistic == "min":
        best, done = min(attempts, key=lambda a: a.min_ms), _minima_agree(attempts, config.min_agreement)
    else:
        best = min(attempts, key=lambda a: a.relative_iqr)
        done = best.stable
    return Measurement(**{**best.__dict__, "attempts": len(attempts), "stable": done}), done


def measure_interleaved(
    runners: Sequence[Runner],
    config: MeasureConfig = MeasureConfig(),
    clock: Callable[[], float] | None = None,
    on_error: Callable[[int, Exception], None] | None = None,
) -> list[Measurement | None]:
    """Time several runners in rounds: attempt k of each unfinished runner before attempt k+1 of any.

    A runner's attempts are then seconds apart, so two of them agreeing is evidence about the machine's
    quiet speed and not about one slow spell (on a shared host such spells last seconds and slow every run
    evenly). A runner that raises is dropped and reported to `on_error(i, error)` (re-raised without it);
    its result is None.
    """
    check_statistic(config.statistic)
    clock = clock or CLOCKS[resolve_clock(config.clock, None)]
    attempts: dict[int, list[Measurement]] = {i: [] for i in range(len(runners))}
    results: list[Measurement | None] = [None] * len(runners)
    for attempt in range(1, config.max_attempts + 1):
        for i in list(attempts):
            try:
                attempts[i].append(measure_attempt(runners[i], config, clock, attempt))
            except Exception as error:
                if on_error is None:
                    raise
                del attempts[i]
                on_error(i, error)
                continue
            result, done = settle(attempts[i], config)
            if done or attempt == config.max_attempts:
                results[i] = result
                del attempts[i]
    return results


def measure(
    runner: Runner, config: MeasureConfig = MeasureConfig(), clock: Callable[[], float] | None = None
) -> Measurement:
    """Time `runner` in up to `max_attempts` attempts (each: warm-up, then timed runs).

    Statistic `median` keeps the attempt with the smallest relative IQR and stops at the first stable one;
    `min` keeps the attempt with the smallest minimum and stops once two attempts' minima agree (`stable`
    then means they did). `clock` returns seconds (default: `config.clock`); tests pass a fake one. Devices
    with their own timer (CUDA events, TVM's evaluator) report per-run times themselves.
    """
    return measure_interleaved([runner], config, clock)[0]
