"""The TVM RPC path end to end on loopback: a real tracker and server (127.0.0.1 only)."""

import os
import sqlite3
from pathlib import Path

import pytest

from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.measure import MeasureConfig, measure
from toolchain.latency.rpc import DeviceLostError, with_retries
from toolchain.latency.store import MeasurementStore
from toolchain.targets import RpcEndpoint

pytest.importorskip("tvm", reason="the RPC path needs apache-tvm")
pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
from processes import alive, descendants  # noqa: E402

from toolchain.latency.rpc import loopback_cluster  # noqa: E402

pytestmark = pytest.mark.tvm
TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"
TINY_SHAPE = (1, 3, 16, 16)
QUICK = MeasureConfig(warmup_runs=1, timed_runs=3, max_attempts=1, min_timed_ms=0.0)  # a quick timing, no span
COLUMNS_THAT_DEPEND_ON_THE_RUN = {
    "id",
    "fingerprint_id",
    "fingerprint_json",
    "median_ms",
    "iqr_ms",
    "mad_ms",
    "min_ms",
    "attempts",
    "stable",
    "created_at",
}


def _rows(path: str) -> list[dict]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM measurements ORDER BY config_key").fetchall()
    return [{k: row[k] for k in row.keys() if k not in COLUMNS_THAT_DEPEND_ON_THE_RUN} for row in rows]


def test_profiling_through_rpc_gives_the_same_rows_as_a_local_run(tmp_path):
    local = CampaignConfig(
        model=TINY, input_shape=TINY_SHAPE, db_path=str(tmp_path / "local.db"), backend="tvm", samples=4, measure=QUICK
    )
    assert run_campaign(local).failed == []
    with loopback_cluster(key="loopback-test", tracker_port=9290) as cluster:
        remote = CampaignConfig(
            model=TINY,
            input_shape=TINY_SHAPE,
            db_path=str(tmp_path / "rpc.db"),
            backend="tvm",
            samples=4,
            measure=QUICK,
            rpc=cluster.endpoint,
        )
        report = run_campaign(remote)
    assert report.failed == [] and report.measured == 4
    assert _rows(remote.db_path) == _rows(local.db_path)
    with MeasurementStore(remote.db_path) as store:
        assert all(r.fingerprint["device"] == "rpc:loopback-test" and r.median_ms > 0 for r in store.rows())


def test_each_model_timed_in_one_session_is_the_model_uploaded(tmp_path):
    """Regression: libraries uploaded under one file name were dlopen()ed once, so every later model in the
    session was timed as the first one (a pruned model measured as slow as the dense one)."""
    import torch

    from toolchain.models import resolve_model
    from toolchain.pruning import PruneConfig, prune
    from toolchain.targets import get_target

    dense, inputs = resolve_model("zoo:demo")
    x = torch.randn(*inputs[0].shape)
    narrow = prune(dense, x, PruneConfig(ratio=0.9)).model
    with loopback_cluster(key="same-session", tracker_port=9690) as cluster:
        target = get_target("cpu", "tvm", 1, rpc=cluster.endpoint)
        dense_ms = measure(target.prepare(dense.eval(), x), QUICK).median_ms
        narrow_ms = measure(target.prepare(narrow.eval(), x), QUICK).median_ms
    assert narrow_ms < 0.5 * dense_ms  # 0.9 of the channels removed: about 1/40 of the work


def test_sessions_are_renewed_before_the_server_would_expire_them(monkeypatch):
    import torch

    from toolchain.models import resolve_model
    from toolchain.targets import get_target
    from toolchain.targets.backends import tvm_backend

    monkeypatch.setattr(tvm_backend, "RENEW_AFTER_S", 0.0)  # every use renews
    model, inputs = resolve_model("zoo:demo")
    x = torch.randn(*inputs[0].shape)
    with loopback_cluster(key="renewed", tracker_port=9890) as cluster:
        target = get_target("cpu", "tvm", 1, rpc=cluster.endpoint)
        measure(target.prepare(model.eval(), x), QUICK)
        first_opened_at = tvm_backend._remote_sessions[cluster.endpoint][1]  # no reference to the session kept
        second = measure(target.prepare(model.eval(), x), QUICK)
        assert tvm_backend._remote_sessions[cluster.endpoint][1] > first_opened_at
    assert second.median_ms > 0


def test_device_that_disappears_is_reported_when_it_was_the_last_and_rows_are_kept(tmp_path):
    from toolchain.latency.farm import FarmSettings

    with loopback_cluster(key="flaky", tracker_port=9490) as cluster:
        config = CampaignConfig(
            model=TINY,
            input_shape=TINY_SHAPE,
            db_path=str(tmp_path / "rpc.db"),
            backend="tvm",
            samples=6,
            measure=QUICK,
            rpc=cluster.endpoint,
            farm=FarmSettings(wait_s=2.0),  # how long its worker waits for another board before it gives up
        )

        def stop_after_two(done, total, what):
            if done == 2:
                cluster.stop_device()

        with pytest.raises(DeviceLostError, match="every device with key 'flaky'.*was lost.*4 configuration"):
            run_campaign(config, on_progress=stop_after_two)
    with MeasurementStore(config.db_path) as store:
        assert len(store.rows()) == 2


def test_retries_recover_from_a_transient_failure():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset")
        return "ok"

    endpoint = RpcEndpoint("127.0.0.1", 1, "k")
    assert with_retries(flaky, endpoint, "timing", attempts=3, sleep=lambda s: None) == "ok"

    def always_fails():
        raise ConnectionError("connection reset")

    with pytest.raises(DeviceLostError, match="failed 2 times during timing: connection reset"):
        with_retries(always_fails, endpoint, "timing", attempts=2, sleep=lambda s: None)


@pytest.mark.slow
def test_sigterm_stops_the_tracker_and_device_server_too():
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "toolchain.latency.rpc", "--key", "sigterm", "--port", "19610"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "tracker 127.0.0.1:" in process.stdout.readline()
        children = descendants(process.pid)
        assert children, "a tracker and a device server run as child processes"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), "children outlived the SIGTERMed parent"
    finally:
        process.kill()
        process.wait()
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)


def test_an_interrupt_while_the_cluster_starts_is_one_line(monkeypatch, capsys):
    from contextlib import contextmanager

    from toolchain.latency import rpc

    @contextmanager
    def interrupted_while_starting(key, tracker_port, devices):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(rpc, "loopback_cluster", interrupted_while_starting)
    assert rpc.main(["--port", "19620"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: stopped while") and err.count("\n") == 1


def test_the_rpc_module_runs_as_main_without_a_double_import_warning():
    """`python -m toolchain.latency.rpc` warned that the module was imported (by the package's public face)
    before it ran as __main__; the modules that use its retries import it on use."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "toolchain.latency.rpc", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--key" in done.stdout and "RuntimeWarning" not in done.stderr
