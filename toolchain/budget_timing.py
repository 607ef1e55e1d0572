"""Latencies that say what they are: the min, median and p90 of one measurement's runs, and its clock.

A budget run's measurer returns milliseconds (by the target's statistic, as `toolchain.latency.timing` does);
`target_timer` returns them as `MeasuredMs`, a float that also carries the statistics of the same timed runs,
so the budget can be met on any of them (`BudgetConfig.budget_statistic`) and the summary can show all three.
A measurer that returns a plain float (a fake, a board's own harness) is read as that one number.

    >>> ms = MeasuredMs.of_samples([0.30, 0.31, 0.33, 0.40], statistic="min", clock="thread_cpu")
    >>> float(ms), ms.value("median"), ms.describe("min")
    (0.3, 0.32, '0.300 ms (min of 4 runs, thread-CPU)')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from toolchain.inputs import ModelInputs
from toolchain.targets import Target

# What a budget can be met on. `min` (default): other work on a shared machine only ever adds time, so the
# fastest run repeats best and is what the model costs on a quiet core; `median` and `p90` say what a user of a
# busy machine sees in the typical and the slow case.
BUDGET_STATISTICS = ("min", "median", "p90")
CLOCK_NAMES = {"thread_cpu": "thread-CPU", "wall": "wall"}


class MeasuredMs(float):
    """Milliseconds by the measurement's own statistic, with the min/median/p90 of the same runs."""

    min_ms: float | None
    median_ms: float | None
    p90_ms: float | None
    runs: int | None
    statistic: str | None
    clock: str | None

    @classmethod
    def of_samples(cls, samples_ms: Sequence[float], statistic: str, clock: str | None,
                   min_ms: float | None = None) -> MeasuredMs:
        """From one attempt's per-run times; `min_ms` overrides the plain minimum (the harness ignores runs
        implausibly faster than the median, `toolchain.latency.measure.summarize`)."""
        values = np.asarray(samples_ms, dtype=np.float64)
        stats = {"min": float(values.min()) if min_ms is None else min_ms, "median": float(np.median(values)),
                 "p90": float(np.percentile(values, 90))}
        made = cls(stats[statistic])
        made.min_ms, made.median_ms, made.p90_ms = stats["min"], stats["median"], stats["p90"]
        made.runs, made.statistic, made.clock = len(values), statistic, clock
        return made

    def value(self, statistic: str) -> float:
        return float(getattr(self, f"{statistic}_ms"))

    def describe(self, statistic: str) -> str:
        clock = CLOCK_NAMES.get(self.clock, self.clock)
        return f"{self.value(statistic):.3f} ms ({statistic} of {self.runs} runs, {clock})"


def by_statistic(measured: float, statistic: str | None) -> float:
    """`measured` by `statistic` when it carries the runs' statistics, else (or for None) the number itself."""
    return measured.value(statistic) if statistic and isinstance(measured, MeasuredMs) else float(measured)


def run_stats(measured: float) -> dict | None:
    """The manifest's record of the runs behind a measurement: {min_ms, median_ms, p90_ms, runs}, or None."""
    if not isinstance(measured, MeasuredMs):
        return None
    return {"min_ms": round(measured.min_ms, 4), "median_ms": round(measured.median_ms, 4),
            "p90_ms": round(measured.p90_ms, 4), "runs": measured.runs}


def runs_of(result) -> dict:
    """`run_stats` of a `toolchain.latency.measure.Measurement` (its kept attempt's runs)."""
    return run_stats(MeasuredMs.of_samples(result.samples_ms, "min", None, min_ms=result.min_ms))


def target_timer(target: Target):
    """A measurer like `toolchain.latency.timing.target_measure(target)` whose result is a `MeasuredMs`."""
    from toolchain.latency.measure import measure
    from toolchain.latency.timing import target_measure
    from toolchain.targets import measurement_lock
    from toolchain.threads import torch_threads

    if target.rpc is not None:  # a board: the timing module's retries and reconnects, one number back
        return target_measure(target)
    runtime, config = target.resolve(), target.measure_config()

    def measure_ms(model: nn.Module, example_input: ModelInputs) -> MeasuredMs:
        with torch_threads(1):
            runner = runtime.prepare(model.eval(), example_input)
        with measurement_lock(target.lock_path):
            result = measure(runner, config)
        return MeasuredMs.of_samples(result.samples_ms, target.statistic, target.clock, min_ms=result.min_ms)

    return measure_ms
