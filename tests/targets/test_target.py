"""`Target`: the measurement policy as one value, its defaults those of toolchain.defaults, the clock resolved
once; and the one builder of a board's TVM target JSON."""

import doctest
import json
from dataclasses import fields

import pytest

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.latency.fitting import FitConfig
from toolchain.latency.measure import MeasureConfig
from toolchain.targets import RpcEndpoint, Target, get_target, resolve_clock
from toolchain.targets.devices import get_device, rpc_target_json

BOARD = RpcEndpoint("127.0.0.1", 9190, "jetson-orin", rpc_target_json("jetson"))


def test_target_defaults_are_those_of_toolchain_defaults():
    target = Target()
    assert (target.device, target.backend, target.threads) == (defaults.TARGET, defaults.BACKEND, defaults.THREADS)
    assert (target.statistic, target.warmup_runs, target.timed_runs) == (
        defaults.STATISTIC, defaults.WARMUP_RUNS, defaults.TIMED_RUNS)
    assert (target.min_timed_ms, target.profile_samples) == (defaults.MIN_TIMED_MS, defaults.PROFILE_SAMPLES)
    assert target.clock == resolve_clock(defaults.CLOCK, get_target(defaults.TARGET, defaults.BACKEND,
                                                                    defaults.THREADS))


def test_measure_and_fit_configs_default_to_toolchain_defaults():
    measure = MeasureConfig()
    assert (measure.warmup_runs, measure.timed_runs, measure.statistic, measure.clock, measure.min_timed_ms) == (
        defaults.WARMUP_RUNS, defaults.TIMED_RUNS, defaults.STATISTIC, defaults.CLOCK, defaults.MIN_TIMED_MS)
    fit = FitConfig(db_path="x.db", predictor="lpnet")
    assert (fit.target, fit.threads, fit.statistic) == (defaults.TARGET, defaults.THREADS, defaults.STATISTIC)
    assert fit.backend == get_target(defaults.TARGET).backend  # None: the device's default backend


def test_measure_config_is_the_targets_policy_with_the_clock_resolved():
    target = Target("cpu", warmup_runs=2, timed_runs=7, min_timed_ms=0.0, statistic="median")
    assert target.measure_config() == MeasureConfig(warmup_runs=2, timed_runs=7, clock="thread_cpu",
                                                    statistic="median", min_timed_ms=0.0)
    assert {f.name for f in fields(MeasureConfig)} >= {"warmup_runs", "timed_runs", "clock", "statistic",
                                                      "min_timed_ms"}


def test_the_auto_clock_is_thread_cpu_only_where_the_inference_runs_on_the_timing_thread():
    assert resolve_clock("auto", get_target("cpu")) == "thread_cpu"  # onnxruntime, 1 intra-op thread
    assert resolve_clock("auto", get_target("cpu", threads=2)) == "wall"  # other threads do part of the work
    assert resolve_clock("wall", get_target("cpu")) == "wall"  # an explicit choice stands
    assert resolve_clock("auto", None) == "wall"  # no runtime known: the clock valid for every runner


def test_a_target_resolves_its_clock_once_when_made():
    assert Target("cpu").clock == "thread_cpu"
    assert Target("cpu", threads=2).clock == "wall"
    assert Target("cpu", "torch").clock == "thread_cpu"
    assert Target("cpu", rpc=BOARD).clock == "wall"  # timed on the board, by TVM's evaluator
    assert Target("cpu", clock="wall").clock == "wall"
    assert Target("cpu") == Target("cpu", clock="thread_cpu")  # one value, however it was spelled


def test_label_where_and_resolve():
    assert Target("cpu").label == "cpu/onnxruntime/1t"
    assert Target("cpu", threads=3).where == "cpu/onnxruntime/3t"
    assert Target("cpu", rpc=BOARD).resolve().backend == "tvm"  # a board is timed through TVM RPC
    assert Target("cpu", rpc=BOARD).where == "cpu/tvm/1t@rpc-jetson-orin"
    assert Target().describe() == {"label": "cpu/onnxruntime/1t", "clock": "thread_cpu", "statistic": "min",
                                   "timed_runs": defaults.TIMED_RUNS, "min_timed_ms": defaults.MIN_TIMED_MS}


def test_an_unknown_device_or_backend_fails_on_resolve_naming_the_choices():
    with pytest.raises(ToolchainError, match="unknown target 'npu'; valid targets/backends: cpu: onnxruntime"):
        Target("npu").resolve()
    with pytest.raises(ToolchainError, match="unknown backend 'openvino' for target 'cpu'"):
        Target("cpu", "openvino").resolve()


def test_one_function_builds_a_boards_tvm_target_json():
    orin = json.loads(rpc_target_json("jetson"))
    assert orin == dict(get_device("jetson-orin").tvm_host_target)
    assert orin["mtriple"] == "aarch64-linux-gnu"
    assert rpc_target_json(get_device("jetson-xavier")) == rpc_target_json("jetson-xavier")
    assert rpc_target_json("cpu") == ""  # this host: the loopback compiles for its own llvm
    with pytest.raises(ToolchainError, match="unknown device 'npu'"):
        rpc_target_json("npu")


@pytest.mark.parametrize("module", ["toolchain.targets", "toolchain.targets.target", "toolchain.targets.measurement",
                                    "toolchain.targets.devices", "toolchain.defaults", "toolchain.threads"])
def test_docstring_examples(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
