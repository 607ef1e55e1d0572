"""One policy names a target's predictor folders and measurement databases, and builds campaigns and fits."""

import doctest
import importlib

import pytest

from toolchain.latency.campaign import CampaignConfig
from toolchain.latency.fitting import FitConfig
from toolchain.latency.provision import PROFILE_DB, default_predictor_path, profile_db_for
from toolchain.targets import RpcEndpoint, Target

BOARD = RpcEndpoint("127.0.0.1", 9190, "jetson orin")


def test_databases_are_split_by_board_and_clock():
    assert profile_db_for(Target("cpu")) == "runs/latency-thread_cpu.db"
    assert profile_db_for(Target("cpu", clock="wall")) == PROFILE_DB
    assert profile_db_for(Target("cpu", rpc=BOARD), "x/y.db") == "x/y-rpc-jetson-orin.db"  # the wall clock there


def test_predictor_folders_name_model_shape_target_clock_and_statistic():
    assert default_predictor_path("file.py:net", (1, 3, 32, 32), Target("cpu", threads=2)) == \
        "runs/predictors/file.py-net-1x3x32x32-cpu-onnxruntime-2t-wall-min-lpnet"
    # Median predictors keep the names they had before the statistic was part of the name.
    assert default_predictor_path("zoo:demo", (1, 1, 28, 28), Target("cpu", statistic="median")) == \
        "runs/predictors/zoo-demo-1x1x28x28-cpu-onnxruntime-1t-thread_cpu-lpnet"


def test_campaign_and_fit_for_a_target_take_its_policy():
    target = Target("cpu", threads=2, statistic="median", warmup_runs=1, timed_runs=9, rpc=None)
    campaign = CampaignConfig.for_target("zoo:demo", "m.db", target, samples=7)
    assert (campaign.target, campaign.backend, campaign.threads, campaign.samples) == ("cpu", "onnxruntime", 2, 7)
    assert campaign.measure == target.measure_config()
    fit = FitConfig.for_target("m.db", "macs", target, heldout_fraction=0.5)
    assert (fit.target, fit.backend, fit.threads, fit.statistic, fit.heldout_fraction) == (
        "cpu", "onnxruntime", 2, "median", 0.5)


@pytest.mark.parametrize("module", ["toolchain.latency.provision", "toolchain.latency.campaign",
                                    "toolchain.latency.fitting"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_latency_package_never_imports_the_budget_loop_or_the_cli():
    from pathlib import Path

    import toolchain.latency

    package = Path(toolchain.latency.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text()
        for layer in ("toolchain.budget", "toolchain.cli", "toolchain.commands", "from toolchain import budget",
                      "from toolchain import cli"):
            assert layer not in text, f"{source.relative_to(package)} imports {layer}"


def test_targets_import_without_the_latency_package():
    """One way: latency imports targets; no module of targets imports latency at module level (the harness is
    imported only inside Target.measure_config). Checked on the sources: importing `toolchain.targets` runs the
    package's __init__, which exports the latency public face."""
    import ast
    from pathlib import Path

    import toolchain.targets

    package = Path(toolchain.targets.__file__).parent
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in tree.body:  # module level only
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            assert not any(name.startswith("toolchain.latency") for name in names), \
                f"{source.relative_to(package)} imports {names} at module level"
