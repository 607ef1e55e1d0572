"""A campaign on a loopback device farm: a real TVM tracker and two device servers under one key (127.0.0.1)."""

import os
import sqlite3
import time
from pathlib import Path

import pytest

from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.farm import FarmSettings
from toolchain.latency.fingerprint import device_of
from toolchain.latency.measure import MeasureConfig
from toolchain.latency.spread import board_spread
from toolchain.latency.store import MeasurementStore

pytest.importorskip("tvm", reason="the farm needs apache-tvm")
pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
from processes import alive_descendants  # noqa: E402

from toolchain.latency.rpc import loopback_cluster  # noqa: E402

pytestmark = pytest.mark.tvm
TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"
QUICK = MeasureConfig(warmup_runs=1, timed_runs=3, max_attempts=1, min_timed_ms=0.0)


def test_two_boards_share_a_campaign_and_one_killed_midway_loses_nothing(tmp_path):
    before = alive_descendants(os.getpid())
    with loopback_cluster(key="farm-test", tracker_port=9990, devices=2) as cluster:
        config = CampaignConfig(model=TINY, input_shape=(1, 3, 16, 16), db_path=str(tmp_path / "farm.db"),
                                backend="tvm", samples=8, measure=QUICK, rpc=cluster.endpoint, spread_configs=2,
                                farm=FarmSettings(wait_s=5.0))
        killed = []

        def kill_the_board_that_just_stored_the_third_row(done, total, what):
            if done == 3 and not killed:
                killed.append(what.rsplit(" on ", 1)[1])
                cluster.stop_device(cluster.addresses.index(killed[0]))

        report = run_campaign(config, kill_the_board_that_just_stored_the_third_row)
        assert killed and report.failed == [] and report.measured == report.planned
        assert any(lost.startswith(killed[0]) for lost in report.lost)
        with MeasurementStore(config.db_path) as store:
            rows = store.rows()
            timings = store.device_timings(rows[0].fingerprint_id)
        assert len(rows) == report.planned == len({row.config_key for row in rows})  # all there, none twice
        assert {device_of(row.fingerprint) for row in rows} == set(cluster.addresses)  # timed by both boards
        assert len({row.fingerprint_id for row in rows}) == 1  # one kind of board
        assert sorted(report.devices) == sorted(cluster.addresses) and sum(report.devices.values()) == len(rows)
        # The spread set was timed on both boards before either took from the queue.
        assert board_spread(timings)["configs"] == 2
        resumed = run_campaign(config)  # the surviving board alone: everything is stored already
        assert resumed.measured == 0 and resumed.skipped == report.planned
    with sqlite3.connect(config.db_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == report.planned
    deadline = time.monotonic() + 10
    while alive_descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive_descendants(os.getpid()) - before, "a tracker or device server outlived the farm"

