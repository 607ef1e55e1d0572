"""The typed manifest: what the writers write reads back unchanged, older layouts still read, newer ones are
refused in one line, and every latency says how it was obtained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from toolchain.allocate import BudgetConfig
from toolchain.budget import PredictorInfo, prune_to_budget
from toolchain.cli import main
from toolchain.manifest import (
    BUDGET_BAND_LOW,
    MANIFEST_VERSION,
    Latency,
    Manifest,
    ManifestError,
    read_manifest,
    summary_lines,
)
from toolchain.models import resolve_model

REPORT_FIXTURES = Path(__file__).parent / "report" / "fixtures"
# What `BudgetJob.run` records about how the budget loop timed (the CLI's target on this host).
POLICY = {"label": "cpu/onnxruntime/1t", "clock": "thread_cpu", "statistic": "min", "timed_runs": 25,
          "min_timed_ms": 100.0}
COST_MS_PER_CHANNEL = {"stem.0": 0.02, "layer1.0.conv1": 0.01, "layer2.0.conv1": 0.01,
                       "layer2.0.downsample.0": 0.012, "layer3.0.conv1": 0.008, "layer3.0.downsample.0": 0.006}


class _LinearLatency:
    """A synthetic latency model: fixed cost plus a cost per kept channel."""

    differentiable = True

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        return 0.1 + widths @ torch.tensor(list(COST_MS_PER_CHANNEL.values()))


def _fake_target(model, _example_input) -> float:
    """Times a model as a fixed cost plus per-channel costs of its actual widths (deterministic)."""
    return 1.0 + sum(cost * model.get_submodule(name).out_channels for name, cost in COST_MS_PER_CHANNEL.items())


@pytest.fixture(scope="module")
def ratio_folder(tmp_path_factory) -> dict:
    """A folder written by `toolchain prune --ratio` on the demo model (with MNIST-5k accuracies)."""
    out = tmp_path_factory.mktemp("prune") / "demo"
    assert main(["prune", "--model", "zoo:demo", "--ratio", "0.5", "--finetune-steps", "2", "--out", str(out),
                 "--json"]) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def budget_manifest() -> dict:
    """A budget run's manifest as `BudgetJob.run` records it (synthetic predictor, fake target)."""
    model, inputs = resolve_model("zoo:demo")
    x = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(0))
    result = prune_to_budget(model, x, BudgetConfig(budget_ratio=0.5, criterion="l1", allocator="knapsack"),
                             PredictorInfo(_LinearLatency(), "synthetic", None, {}), _fake_target)
    return {**result.manifest, "latency_target": POLICY}


def test_a_ratio_prune_folder_reads_back_unchanged(ratio_folder):
    written = ratio_folder
    manifest = Manifest.from_json(written)
    assert written["version"] == MANIFEST_VERSION == manifest.version
    assert manifest.to_json() == written  # one to/from JSON pair: nothing lost, nothing added
    assert manifest.model == "zoo:demo" and manifest.pruning.ratio == 0.5
    assert manifest.pruning.params < manifest.pruning.dense_params
    assert manifest.accuracy.data == "mnist5k" and 0.0 <= manifest.accuracy.pruned <= 1.0
    assert manifest.verification.onnx_max_rel_err <= 1e-4
    assert manifest.budget is None and manifest.latency.measured is None  # a ratio prune is not timed
    assert {"written_by", "written_files"} <= set(manifest.extra)  # the folder stamp, kept as it was


def test_a_budget_manifest_reads_back_unchanged_and_says_how_latency_was_obtained(budget_manifest):
    manifest = Manifest.from_json(budget_manifest)
    written = manifest.to_json()
    assert Manifest.from_json(written).to_json() == written
    for key, value in budget_manifest.items():  # the unversioned form loses nothing either
        assert written[key] == value, key
    budget, latency = manifest.budget, manifest.latency
    assert budget.within_band(latency.measured.ms) and budget.budget_met
    assert len(budget.iterations) == len(budget_manifest["iterations"]) >= 1
    measured = latency.measured
    assert (measured.statistic, measured.clock) == ("min", "thread_cpu")
    assert measured.is_measured and measured.source == "measured by the budget loop on cpu/onnxruntime/1t"
    assert latency.dense.statistic == "min" and latency.dense.ms > measured.ms
    assert not latency.predicted.is_measured and latency.predicted.source == "predicted by synthetic"
    assert written["latency"] == {"measured_ms": measured.ms, "statistic": "min", "clock": "thread_cpu",
                                  "source": measured.source, "predicted_ms": latency.predicted.ms,
                                  "prediction_source": "predicted by synthetic"}


def test_the_cli_summary_reads_the_typed_manifest(budget_manifest, ratio_folder):
    written = ratio_folder
    lines = summary_lines(Manifest.from_json(written))
    assert lines[0].startswith("  params 308,074 -> ") and "ONNX verified against PyTorch" in lines[-1]
    assert written["onnx_outputs_vary_with_input"] is True and "near-constants" not in lines[-1]
    constant = summary_lines(Manifest.from_json({**written, "onnx_outputs_vary_with_input": False}))
    assert constant[-1].endswith("so this compared near-constants")
    budget_lines = summary_lines(Manifest.from_json({**budget_manifest, "onnx_max_rel_err": 1e-7}))
    latency = next(line for line in budget_lines if line.startswith("  latency on cpu/onnxruntime/1t: budget "))
    assert "met on the min of the timed runs; measured " in latency and latency.endswith(" ms (min, thread-CPU)")
    assert budget_lines[-1].startswith("    dense ") and budget_lines[-1].endswith("l1 + knapsack")
    recovered = next(line for line in lines if line.startswith("  recovery: distillation"))
    assert "2 steps in " in recovered and "stopped: fixed number of steps done" in recovered


def test_the_summary_says_which_allocation_the_selection_kept(budget_manifest):
    selection = {"chosen": "uniform", "distillation_steps": 30, "candidates": {
        "knapsack": {"measured_ms": 0.30, "budget_met": True, "tries": 2, "calib_loss_after_recovery": 0.4567},
        "uniform": {"measured_ms": 0.31, "budget_met": True, "tries": 1, "calib_loss_after_recovery": 0.1234}}}
    manifest = Manifest.from_json({**budget_manifest, "onnx_max_rel_err": 1e-7, "recovered_selection": selection})
    assert manifest.budget.recovered_selection == selection and manifest.to_json()["recovered_selection"] == selection
    assert summary_lines(manifest)[-1] == ("    kept uniform's widths: calibration loss after 30 distillation steps "
                                           "0.123 (knapsack's: 0.457)")


def test_unknown_keys_of_other_writers_survive_a_round_trip():
    document = {"model": "zoo:demo", "transformer_prune": {"head_ratio": 0.25}, "someone_elses": [1, 2],
                "iterations": [], "budget_ms": 1.0,
                "latency_target": POLICY, "measured_latency_ms": 0.95}
    document["iterations"] = [{"target_predicted_ms": 0.9, "predicted_ms": 0.9, "measured_ms": 0.95,
                               "bracketed": True, "origin": "a later writer's field"}]
    manifest = Manifest.from_json(document)
    assert manifest.extra == {"transformer_prune": {"head_ratio": 0.25}, "someone_elses": [1, 2]}
    assert manifest.budget.iterations[0].origin == "bracketed"
    written = manifest.to_json()
    assert written["transformer_prune"] == {"head_ratio": 0.25} and written["someone_elses"] == [1, 2]
    assert written["iterations"] == document["iterations"]


def test_older_manifests_without_a_version_still_read():
    cpu = read_manifest(REPORT_FIXTURES / "full" / "dist" / "cpu" / "fixture-tiny" / "manifest.json")
    assert cpu.version == 1 and cpu.latency.measured.ms == 0.21 and cpu.budget.budget_ms == 0.3
    assert cpu.latency.predicted.source == "predicted by lpnet (fixture)"  # from its `predictor` record
    jetson = read_manifest(REPORT_FIXTURES / "full" / "dist" / "jetson-orin" / "fixture-tiny" / "manifest.json")
    assert jetson.latency.measured is None and jetson.latency.not_measured.startswith("not measured")
    assert jetson.latency.predicted.ms == pytest.approx(0.0123) and jetson.device_name == "jetson-orin"
    # A host bundle written before: median latency under `measured_latency_ms`, the source beside it.
    source = "measured on this host, cpu/onnxruntime/1t: median of 25 runs after 5 warm-up runs, IQR 0.010 ms"
    old_bundle = {"model": "zoo:demo", "measured_latency_ms": 0.42, "latency_source": source,
                  "latency": {"measured_ms": 0.42, "source": source}}
    measured = Manifest.from_json(old_bundle).latency.measured
    assert (measured.ms, measured.statistic, measured.source) == (0.42, "median", source)  # recognised
    assert "latency_source" not in Manifest.from_json(old_bundle).to_json()  # folded into latency.source


def test_a_newer_manifest_is_refused_in_one_line(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": MANIFEST_VERSION + 1, "model": "zoo:demo"}))
    with pytest.raises(ManifestError, match=f"manifest version {MANIFEST_VERSION + 1} is newer") as error:
        read_manifest(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(ManifestError, match="a manifest is a JSON object"):
        Manifest.from_json([1, 2])
    with pytest.raises(ManifestError, match="malformed manifest: wall_s has the wrong JSON type"):
        Manifest.from_json({"model": "zoo:demo", "budget_ms": 1.0, "wall_s": [1]})
    with pytest.raises(ManifestError, match="malformed manifest: iterations"):
        Manifest.from_json({"model": "zoo:demo", "budget_ms": 1.0, "iterations": [1]})


def test_latency_labels_and_the_one_band_constant():
    from toolchain.report import records
    from toolchain.sweep import SweepConfig

    assert Latency.measured_on("cpu/onnxruntime/1t", 1.0, "min", "wall").source == "measured on cpu/onnxruntime/1t"
    assert Latency.predicted_by("lpnet (runs/predictors/x)", 1.0).source == "predicted by lpnet (runs/predictors/x)"
    assert BudgetConfig(budget_ms=1.0).lower_ratio == BUDGET_BAND_LOW == 0.90
    assert SweepConfig(model="zoo:demo", out=Path("x"), budgets=(0.5,)).lower_ratio == BUDGET_BAND_LOW
    assert records.BUDGET_BAND_LOW is BUDGET_BAND_LOW


def test_the_docstring_examples_hold():
    import doctest

    import toolchain.manifest

    result = doctest.testmod(toolchain.manifest)
    assert result.attempted >= 8 and result.failed == 0
