"""Chunks timed next to a sentinel: slow spells are recognised and their chunks timed again. Fake clocks only."""

from pathlib import Path

import pytest
from timing_fakes import FakeClock, ScriptedRunner

import toolchain.latency.campaign as campaign
from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.measure import MeasureConfig, summarize
from toolchain.latency.sentinel import SentinelCheck, time_chunk
from toolchain.latency.store import MeasurementStore

TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"


def test_check_judges_each_chunk_against_the_best_sentinel_so_far():
    check = SentinelCheck(tolerance=0.05)
    assert check.observe(12.0)  # the first chunk has nothing to be compared with
    assert check.observe(10.0) and not check.observe(11.0) and check.observe(10.4)
    assert not check.is_quiet(12.0)  # the first chunk, judged again once a quieter one was seen
    assert check.best_ms == 10.0


def test_time_chunk_interleaves_attempts_and_reports_the_sentinel_and_errors():
    clock = FakeClock()
    config = MeasureConfig(warmup_runs=0, timed_runs=2, statistic="min", max_attempts=3, min_timed_ms=0.0)
    sentinel = ScriptedRunner(clock, [5.0])
    quick = ScriptedRunner(clock, [2.0])
    settling = ScriptedRunner(clock, [4.0, 4.0, 3.0, 3.0, 3.0, 3.0])  # attempt 1 slow, attempts 2 and 3 agree
    broken = ScriptedRunner(clock, [1.0], fail=True)
    results, sentinel_ms = time_chunk(sentinel, [quick, settling, broken], config, clock)
    assert sentinel_ms == pytest.approx(5.0)
    assert results[0].min_ms == pytest.approx(2.0) and results[0].attempts == 2
    assert results[1].min_ms == pytest.approx(3.0) and results[1].attempts == 3 and results[1].stable
    assert isinstance(results[2], RuntimeError)


def _scripted_campaign(monkeypatch, sentinel_ms_by_chunk, latency_by_chunk):
    """Run a campaign on the tiny model whose chunks 'measure' as scripted (no real timing)."""
    calls = []

    def fake_time_chunk(sentinel, runners, config, clock=None):
        chunk = len(calls)
        calls.append(len(runners))
        return ([summarize([latency_by_chunk[chunk]] * 3) for _ in runners], sentinel_ms_by_chunk[chunk])

    monkeypatch.setattr(campaign, "time_chunk", fake_time_chunk)
    return calls


def test_a_chunk_timed_in_a_slow_spell_is_timed_again_later(monkeypatch, tmp_path):
    calls = _scripted_campaign(monkeypatch, [10.0, 13.0, 10.1, 10.2], [1.0, 9.0, 1.1, 1.2])
    config = CampaignConfig(model=TINY, input_shape=(1, 3, 16, 16), db_path=str(tmp_path / "m.db"), samples=6,
                            interleave=2, measure=MeasureConfig(statistic="min"))
    report = run_campaign(config)
    assert report.measured == report.planned == 6 and calls == [2, 2, 2, 2]  # chunk 2 went to the back
    with MeasurementStore(config.db_path) as store:
        assert sorted(r.min_ms for r in store.rows(model=TINY)) == pytest.approx([1.0, 1.0, 1.1, 1.1, 1.2, 1.2])


def test_rows_stored_before_a_quieter_sentinel_was_seen_are_timed_again(monkeypatch, tmp_path):
    # Chunk 1 looks quiet (nothing to compare with) but chunk 2 shows the machine 30% faster: chunk 1's
    # configurations are re-timed at the end and their rows replaced by the lower re-timing.
    calls = _scripted_campaign(monkeypatch, [13.0, 10.0, 10.0, 10.1], [9.0, 1.0, 1.1, 1.2])
    config = CampaignConfig(model=TINY, input_shape=(1, 3, 16, 16), db_path=str(tmp_path / "m.db"), samples=6,
                            interleave=2, measure=MeasureConfig(statistic="min"))
    report = run_campaign(config)
    assert calls == [2, 2, 2, 2] and report.measured == 6 and report.retimed == 2
    with MeasurementStore(config.db_path) as store:
        assert sorted(r.min_ms for r in store.rows(model=TINY)) == pytest.approx([1.0, 1.0, 1.1, 1.1, 1.2, 1.2])
