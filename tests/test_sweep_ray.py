"""Sweeps as Ray tasks: the local executor's rows, resume across executors, timings that never overlap, worker
deaths retried or recorded, and one-line errors.

The Ray tests share one local Ray instance of 2 CPUs. The fakes live in this file and travel to Ray's workers
by value (the workers need not import the tests folder).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from toolchain.budget_providers import BudgetProviders
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.latency.provision import PredictorInfo
from toolchain.sweep import SweepConfig, read_rows, run_sweep
from toolchain.sweep_executor import ExecutorConfig

# the demo model's groups and what each kept channel costs on the fake target (as in tests/test_budget.py)
COST_MS_PER_CHANNEL = {"stem.0": 0.02, "layer1.0.conv1": 0.01, "layer2.0.conv1": 0.01,
                       "layer2.0.downsample.0": 0.012, "layer3.0.conv1": 0.008, "layer3.0.downsample.0": 0.006}
COMPARED = ("key", "per_layer_widths", "measured_latency_ms", "predicted_latency_ms", "budget_ms", "dense_latency_ms",
            "macs", "params", "within_band", "budget_met", "iterations", "error")


class LinearLatency:
    """A synthetic predictor; with `die` set it kills the Ray worker predicting ("once": the first worker to
    get here, "always": every one), never the test's own process."""

    differentiable = True

    def __init__(self, fixed_ms: float, die: str | None = None, marker: str = ""):
        self.fixed_ms, self.die, self.marker = fixed_ms, die, marker
        self.driver_pid = os.getpid()
        self.costs = torch.tensor(list(COST_MS_PER_CHANNEL.values()))

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        if self.die and os.getpid() != self.driver_pid and self._should_die():
            os._exit(1)  # as a kill would: no exception, no cleanup
        return self.fixed_ms + widths @ self.costs

    def _should_die(self) -> bool:
        if self.die == "always":
            return True
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))  # exactly one process creates it
            return True
        except FileExistsError:
            return False


def fake_measure_ms(model, _example_input, sentinel: str | None = None) -> float:
    """The fake target: a fixed cost + per-channel costs. With `sentinel`, fails if another timing is running."""
    if sentinel is not None:
        os.close(os.open(sentinel, os.O_CREAT | os.O_EXCL))  # FileExistsError: two timings overlapped
    try:
        return 0.1 + sum(cost * model.get_submodule(name).out_channels for name, cost in COST_MS_PER_CHANNEL.items())
    finally:
        if sentinel is not None:
            os.remove(sentinel)


class CheckedMeasurer:
    """`fake_measure_ms` that notices overlapping timings and records which process timed."""

    def __init__(self, folder: Path):
        self.sentinel, self.log = str(folder / "timing-now"), folder / "timing-pids"

    def __call__(self, model, example_input) -> float:
        with open(self.log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return fake_measure_ms(model, example_input, self.sentinel)


def _config(out: Path, executor: ExecutorConfig | None = None, measurer=fake_measure_ms,
            latency: LinearLatency | None = None, budgets=(0.5, 0.8)) -> SweepConfig:
    info = PredictorInfo(latency or LinearLatency(0.1), "synthetic", None, {})
    return SweepConfig(model="zoo:demo", out=out, budgets=budgets, criteria=("l1", "l2"),
                       allocators=("uniform", "knapsack"), data="none", executor=executor or ExecutorConfig(),
                       providers=BudgetProviders(lambda *_args: info, measurer, "cpu/fake/1t"))


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra: pip install -e '.[ray]'")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fakes above, by value
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _compared(rows: list[dict]) -> list[dict]:
    return [{name: row.get(name) for name in COMPARED} for row in rows]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_gives_the_local_executors_rows_and_resumes_its_sweep(tmp_path, ray_instance):
    local = run_sweep(_config(tmp_path / "local"))
    started = run_sweep(_config(tmp_path / "mixed", budgets=(0.5,)))  # a local sweep, stopped after budget 0.5
    steps = []
    resumed = run_sweep(_config(tmp_path / "mixed", ExecutorConfig("ray"), CheckedMeasurer(tmp_path)),
                        step=steps.append)
    assert len(local) == 8 and all(row["error"] is None for row in local)
    assert _compared(resumed) == _compared(local)  # same widths, same (deterministic fake) timings
    for row in started:  # the local executor's rows were kept, not run again
        assert next(r for r in resumed if r["key"] == row["key"])["point_s"] == row["point_s"]
    assert len((tmp_path / "mixed" / "rows.jsonl").read_text().splitlines()) == 8
    pids = set((tmp_path / "timing-pids").read_text().split())
    assert len(pids) == 1 and str(os.getpid()) not in pids  # every timing by the one measuring actor
    assert "points: 4 done, 0 running, 0 failed (of 4)" in steps


@pytest.mark.ray
@pytest.mark.slow
def test_a_point_whose_worker_is_killed_runs_again(tmp_path, ray_instance):
    latency = LinearLatency(0.1, die="once", marker=str(tmp_path / "died"))
    rows = run_sweep(_config(tmp_path / "out", ExecutorConfig("ray", max_retries=1), latency=latency))
    assert (tmp_path / "died").exists(), "a worker was killed mid-point"
    assert len(rows) == 8 and all(row["error"] is None for row in rows)
    assert _compared(rows) == _compared(run_sweep(_config(tmp_path / "local")))


@pytest.mark.ray
@pytest.mark.slow
def test_a_point_whose_worker_keeps_dying_is_recorded_and_the_sweep_goes_on(tmp_path, ray_instance):
    config = replace(_config(tmp_path, ExecutorConfig("ray", max_retries=0), latency=LinearLatency(0.1, "always")),
                     criteria=("l1",), budgets=(0.5,))
    steps = []
    rows = run_sweep(config, step=steps.append)
    assert [row["key"] for row in rows] == ["0.500/l1/knapsack", "0.500/l1/uniform"]
    for row in rows:
        assert "died" in row["error"].lower() and "\n" not in row["error"] and row["point_s"] is None
    assert len(read_rows(tmp_path)) == 2  # recorded in rows.jsonl: a resume does not run them silently again
    assert steps[-1] == "points: 0 done, 0 running, 2 failed (of 2)"


def test_executor_config_rejects_bad_input():
    for kwargs, message in [({"kind": "dask"}, "unknown executor 'dask'; valid: local, ray"),
                            ({"ray_address": "head:6379"}, "--ray-address needs --executor ray"),
                            ({"kind": "ray", "ray_address": "ray://head:10001"}, "Ray Client"),
                            ({"kind": "ray", "max_retries": -1}, "max_retries")]:
        with pytest.raises(ToolchainError, match=message):
            ExecutorConfig(**kwargs)


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray"], "--executor ray needs Ray: pip install 'toolchain[ray]'"),
    (["--executor", "ray", "--workers", "2"], "--workers is for the local executor"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
])
def test_cli_rejects_ray_misuse_in_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    assert main(["sweep", "--model", "zoo:demo", "--out", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s" / "sweep.json").exists()  # failed before any model was loaded
