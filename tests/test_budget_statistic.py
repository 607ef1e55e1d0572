"""Latencies that say what they are: the budget is met on a named statistic of the timed runs, the manifest and
the summary carry the min/median/p90 of the same runs, and a budget run without data scores data-free."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_budget import fake_providers, fake_target, predictor
from toolchain.allocate import BudgetConfig
from toolchain.budget import BudgetJob, prune_to_budget, resolve_criterion
from toolchain.budget_providers import using_providers
from toolchain.budget_timing import MeasuredMs, by_statistic, run_stats
from toolchain.errors import ToolchainError
from toolchain.manifest import Manifest, summary_lines
from toolchain.models import resolve_model

POLICY = {"label": "cpu/fake/1t", "clock": "thread_cpu", "statistic": "min", "timed_runs": 25, "min_timed_ms": 100.0}


@pytest.fixture(scope="module")
def demo():
    model, inputs = resolve_model("zoo:demo")
    return model, torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(0))


def spread_target():
    """The fake target's latency as the fastest of 20 runs; the median is 10% and the p90 20% slower."""
    base, _ = fake_target(fixed_ms=0.1)

    def measure(model, x) -> MeasuredMs:
        fastest = base(model, x)
        samples = [fastest] * 2 + [fastest * 1.1] * 15 + [fastest * 1.2] * 3
        return MeasuredMs.of_samples(samples, statistic="min", clock="thread_cpu")

    return measure


def test_a_measurement_is_a_float_that_carries_the_statistics_of_its_runs():
    ms = MeasuredMs.of_samples([1.0, 2.0, 3.0, 4.0, 10.0], statistic="median", clock="wall")
    assert float(ms) == 3.0 and ms + 1 == 4.0 and json.loads(json.dumps({"ms": ms})) == {"ms": 3.0}
    assert by_statistic(ms, "min") == 1.0 and by_statistic(ms, "p90") == pytest.approx(7.6)
    assert by_statistic(ms, None) == 3.0 and by_statistic(2.5, "p90") == 2.5  # a plain float is its own number
    assert ms.describe("p90") == "7.600 ms (p90 of 5 runs, wall)"
    assert run_stats(ms) == {"min_ms": 1.0, "median_ms": 3.0, "p90_ms": 7.6, "runs": 5} and run_stats(2.5) is None


@pytest.mark.parametrize("statistic, factor", [(None, 1.0), ("min", 1.0), ("median", 1.1), ("p90", 1.2)])
def test_the_budget_is_met_on_the_statistic_asked_for_and_the_summary_names_it(demo, statistic, factor):
    model, x = demo
    config = BudgetConfig(budget_ms=2.5, criterion="l1", allocator="knapsack", budget_statistic=statistic)
    manifest = prune_to_budget(model, x, config, predictor(0.1), spread_target()).manifest
    runs = manifest["latency_runs"]["measured"]
    assert manifest["measured_latency_ms"] == pytest.approx(runs[f"{statistic or 'min'}_ms"], abs=1e-4)
    assert runs["median_ms"] == pytest.approx(1.1 * runs["min_ms"], abs=1e-4) and runs["runs"] == 20
    assert manifest["budget_met"] and manifest["measured_latency_ms"] <= 2.5
    assert manifest["dense_latency_ms"] == pytest.approx(manifest["latency_runs"]["dense"][f"{statistic or 'min'}_ms"],
                                                         abs=1e-4)
    typed = Manifest.from_json({**manifest, "latency_target": POLICY, "onnx_max_rel_err": 1e-7})
    assert Manifest.from_json(typed.to_json()) == typed  # the runs read back unchanged
    assert typed.latency.measured.statistic == (statistic or "min")
    lines = "\n".join(summary_lines(typed))
    assert f"met on the {statistic or 'min'} of the timed runs" in lines
    assert f"({statistic or 'min'} of 20 runs, thread-CPU)" in lines and "of the same runs" in lines
    others = {"min", "median", "p90"} - {statistic or "min"}
    assert all(f"{name} " in lines.split("of 20 runs")[1] for name in others)


def test_an_unknown_budget_statistic_is_one_line():
    with pytest.raises(ToolchainError, match="unknown budget statistic 'mean'; valid: min, median, p90"):
        BudgetConfig(budget_ratio=0.5, budget_statistic="mean")


def test_auto_criterion_is_data_free_without_data_and_says_why(demo):
    model, x = demo
    assert resolve_criterion("auto", object())[0] == "taylor" and resolve_criterion("l1", None) == ("l1", None)
    measure, _ = fake_target(fixed_ms=0.1)
    job = BudgetJob(BudgetConfig(budget_ms=2.5, criterion="auto", allocator="uniform"),
                    providers=fake_providers(measure))
    steps = []
    manifest = job.run("zoo:demo", model, x, None, steps.append).manifest
    assert manifest["criterion"] == "l2" and "no data was given" in manifest["criterion_note"]
    assert any("scoring channels (l2 (data-free" in s for s in steps)
    lines = summary_lines(Manifest.from_json({**manifest, "onnx_max_rel_err": 1e-7}))
    assert any("criterion: l2 (data-free" in line for line in lines)


def test_cli_budget_prune_without_data_uses_a_data_free_criterion_but_refuses_an_explicit_data_one(tmp_path,
                                                                                                    capsys):
    from toolchain.cli import main

    measure, _ = fake_target(fixed_ms=0.1)
    with using_providers(fake_providers(measure)):
        out = tmp_path / "p"
        code = main(["prune", "--model", "zoo:demo", "--budget-ms", "2.5", "--allocator", "uniform", "--data", "none",
                     "--budget-statistic", "min", "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0 and "criterion: l2 (data-free weight magnitude): no data was given" in captured.out
        assert "scoring channels (l2 (data-free weight magnitude)" in captured.err
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["criterion"] == "l2" and manifest["budget_statistic"] == "min"
        code = main(["prune", "--model", "zoo:demo", "--budget-ms", "2.5", "--criterion", "taylor", "--data", "none",
                     "--out", str(tmp_path / "q")])
        err = capsys.readouterr().err.splitlines()
        assert code == 2 and "needs calibration data" in err[-1] and err[-1].startswith("error: ")
        assert "measuring" not in " ".join(err), "refused before any timing or profiling"


def test_cli_refuses_no_recover_with_fixed_steps_in_one_line(tmp_path, capsys):
    from toolchain.cli import main

    code = main(["prune", "--model", "zoo:demo", "--no-recover", "--finetune-steps", "5", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "--no-recover and --finetune-steps" in err and err.count("\n") == 1
