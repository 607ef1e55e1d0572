"""Harness statistics on a fake clock: no real timing happens here."""

import pytest
from timing_fakes import FakeClock, ScriptedRunner

from toolchain.latency.measure import MeasureConfig, measure, summarize


def harness(**fields) -> MeasureConfig:
    """The harness as these tests describe it: the median rule and no minimum timed span, unless a test says
    otherwise (the library's defaults, min and 100 ms, are tested in tests/targets/test_target.py)."""
    return MeasureConfig(**{"statistic": "median", "min_timed_ms": 0.0, **fields})


class DeviceTimed:
    """A device with its own timer: every run takes `run_ms`."""

    def __init__(self, run_ms: float):
        self.run_ms = run_ms

    def run(self) -> None:
        pass

    def device_times_ms(self, repeats):
        return [self.run_ms] * repeats


def test_summary_statistics():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.median_ms == 3.0
    assert stats.iqr_ms == pytest.approx(2.0)  # q3 = 4, q1 = 2
    assert stats.mad_ms == 1.0
    assert stats.min_ms == 1.0
    assert not stats.stable  # IQR / median = 0.67


def test_stable_runner_needs_one_attempt_and_skips_warmup_in_statistics():
    clock = FakeClock()
    runner = ScriptedRunner(clock, [50.0] * 2 + [10.0] * 8)  # 2 slow warm-up runs, then 10 ms
    result = measure(runner, harness(warmup_runs=2, timed_runs=8, max_attempts=3), clock=clock)
    assert result.median_ms == pytest.approx(10.0)
    assert result.iqr_ms == pytest.approx(0.0)
    assert result.attempts == 1 and result.stable
    assert runner.runs == 10


def test_wide_spread_is_remeasured_and_best_attempt_kept():
    clock = FakeClock()
    noisy = [10.0, 30.0, 10.0, 30.0]
    quiet = [20.0, 20.5, 19.5, 20.0]
    runner = ScriptedRunner(clock, noisy + noisy + quiet)  # attempts 1 and 2 noisy, attempt 3 quiet
    result = measure(runner, harness(warmup_runs=0, timed_runs=4, max_attempts=3), clock=clock)
    assert result.attempts == 3
    assert result.median_ms == pytest.approx(20.0)
    assert result.stable


def test_always_noisy_runner_is_reported_unstable_after_max_attempts():
    clock = FakeClock()
    runner = ScriptedRunner(clock, [5.0, 15.0])
    result = measure(runner, harness(warmup_runs=1, timed_runs=4, max_attempts=2), clock=clock)
    assert result.attempts == 2 and not result.stable
    assert runner.runs == 2 * (1 + 4)


def test_device_timer_is_used_instead_of_the_host_clock():
    clock = FakeClock()
    result = measure(DeviceTimed(2.0), harness(warmup_runs=1, timed_runs=5), clock=clock)
    assert result.median_ms == 2.0 and len(result.samples_ms) == 5


def test_short_runs_go_on_until_they_span_the_minimum_time():
    clock = FakeClock()
    runner = ScriptedRunner(clock, [0.5])  # a 0.5 ms model
    result = measure(runner, harness(warmup_runs=0, timed_runs=5, min_timed_ms=20.0), clock=clock)
    assert len(result.samples_ms) == 40  # 40 x 0.5 ms = 20 ms
    slow = ScriptedRunner(FakeClock(), [10.0])
    assert len(measure(slow, harness(warmup_runs=0, timed_runs=5, min_timed_ms=20.0),
                       clock=slow.clock).samples_ms) == 5  # already longer than 20 ms: timed_runs decides


def test_device_timed_runs_also_span_the_minimum_time():
    config = harness(warmup_runs=0, timed_runs=4, min_timed_ms=10.0)
    result = measure(DeviceTimed(0.25), config, clock=FakeClock())
    assert len(result.samples_ms) == 40 and sum(result.samples_ms) == pytest.approx(10.0)


def test_min_statistic_remeasures_until_two_attempt_minima_agree():
    clock = FakeClock()
    # Attempt 1 lies wholly inside a burst (evenly slow: a small IQR), attempt 2 is quiet, attempt 3 agrees.
    burst, quiet = [15.0, 15.2, 15.1, 15.0], [10.0, 10.4, 10.2, 10.1]
    runner = ScriptedRunner(clock, burst + quiet + quiet)
    config = harness(warmup_runs=0, timed_runs=4, statistic="min", max_attempts=5)
    result = measure(runner, config, clock=clock)
    assert result.attempts == 3 and result.stable
    assert result.min_ms == pytest.approx(10.0)
    # By the median rule the burst's even attempt would have been accepted at once.
    other = ScriptedRunner(FakeClock(), burst + quiet)
    median_rule = measure(other, harness(warmup_runs=0, timed_runs=4), clock=other.clock)
    assert median_rule.attempts == 1 and median_rule.median_ms == pytest.approx(15.05)


def test_min_statistic_reports_unstable_when_minima_never_agree():
    clock = FakeClock()
    runner = ScriptedRunner(clock, [10.0] * 4 + [20.0] * 4 + [40.0] * 4)
    config = harness(warmup_runs=0, timed_runs=4, statistic="min", max_attempts=3)
    result = measure(runner, config, clock=clock)
    assert result.attempts == 3 and not result.stable and result.min_ms == pytest.approx(10.0)


def test_unknown_statistic_is_refused():
    with pytest.raises(Exception, match="unknown latency statistic 'mean'"):
        measure(DeviceTimed(1.0), harness(statistic="mean"), clock=FakeClock())


def test_a_run_the_clock_did_not_see_never_sets_the_minimum():
    """Seen in a fresh clone: one run of 135 timed at 0.0 ms with the thread-CPU clock."""
    stats = summarize([0.76, 0.0, 0.75, 0.78, 0.74])
    assert stats.min_ms == 0.74
    assert stats.samples_ms[1] == 0.0  # kept in the record


def test_fitting_skips_stored_rows_with_no_latency():
    from dataclasses import replace

    from toolchain.latency.fitting import split_queries
    from toolchain.latency.store import MeasurementRow

    row = MeasurementRow("model", "zoo:demo", {"stem.0": 8}, [], (1, 1, 28, 28), "cpu", "onnxruntime", 1, 0, "sobol",
                         1000, "f", {}, 0.75, 0.01, 0.01, 0.74, 25, 2, True)
    broken = replace(row, widths={"stem.0": 16}, min_ms=0.0)
    train, heldout = split_queries([row, broken], heldout_fraction=0.0, statistic="min")
    assert [q.measured_ms for q in train + heldout] == [0.74]


def test_a_few_configurations_always_hold_one_out():
    """Seen after a test model moved folder: 5 configurations whose key hashes all fell on the training side
    failed the on-the-fly fit ("got 5 and 0"); the split keeps one aside whenever there are two or more."""
    from dataclasses import replace

    from toolchain.latency.fitting import is_heldout, split_queries
    from toolchain.latency.store import MeasurementRow

    row = MeasurementRow("model", "zoo:demo", {"stem.0": 8}, [], (1, 1, 28, 28), "cpu", "onnxruntime", 1, 0, "sobol",
                         1000, "f", {}, 0.75, 0.01, 0.01, 0.74, 25, 2, True)
    rows = [replace(row, widths={"stem.0": w}, min_ms=0.1 * w) for w in range(1, 40)]
    train_side = [r for r in rows if not is_heldout(r.config_key, 0.2)][:5]
    assert len(train_side) == 5
    train, heldout = split_queries(train_side, heldout_fraction=0.2, statistic="min")
    assert len(train) == 4 and len(heldout) == 1
    again_train, again_heldout = split_queries(list(reversed(train_side)), heldout_fraction=0.2, statistic="min")
    assert again_heldout[0].measured_ms == heldout[0].measured_ms  # the same one, whatever the order
    assert split_queries(train_side[:1], heldout_fraction=0.2, statistic="min")[1] == []
