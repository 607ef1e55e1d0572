"""Recovery in one place: BatchNorm re-calibration and distillation, for ratio and budget pruning alike."""

from __future__ import annotations

import pytest
from torch.utils.data import Subset

from toolchain.data import DataSplits, load_mnist5k
from toolchain.models import resolve_model
from toolchain.pruning import prune
from toolchain.recover import RecoveryConfig, recover


@pytest.fixture(scope="module")
def small_mnist() -> DataSplits:
    splits = load_mnist5k()
    return DataSplits(Subset(splits.train, range(128)), Subset(splits.calib, range(64)),
                      Subset(splits.test, range(100)))


@pytest.mark.parametrize("finetune_steps", [0, 2])
def test_recover_recalibrates_then_distils_and_says_what_it_did(small_mnist, finetune_steps):
    dense, specs = resolve_model("zoo:demo")
    pruned = prune(dense, small_mnist.test[0][0].unsqueeze(0), ratio=0.5).model
    means_before = pruned.get_submodule("stem.1").running_mean.clone()
    done = recover(pruned, dense, small_mnist, RecoveryConfig(finetune_steps=finetune_steps))
    assert list(done) == ["dense_accuracy", "accuracy_before_recovery", "accuracy",
                          "accuracy_after_bn_recalibration", "finetune_steps", "recovery"]  # the manifest's order
    assert done["finetune_steps"] == finetune_steps and done["dense_accuracy"] > 0.9
    assert done["recovery"]["ran"] == (finetune_steps > 0) and done["recovery"]["steps"] == finetune_steps
    assert not pruned.get_submodule("stem.1").running_mean.equal(means_before)  # statistics re-estimated
    if finetune_steps == 0:
        assert done["accuracy"] == done["accuracy_after_bn_recalibration"]
    assert not pruned.training  # handed back in eval mode, ready to export


@pytest.mark.slow
def test_a_ratio_prune_in_the_pipeline_is_recovered_by_the_same_function(tmp_path):
    from toolchain.inputs import make_inputs
    from toolchain.pipeline import PipelineConfig, write_pruned_folder

    recovery = RecoveryConfig(finetune_steps=2)  # fixed steps: the same result both ways
    manifest = write_pruned_folder(PipelineConfig(model="zoo:demo", out=tmp_path / "pruned", recovery=recovery))
    dense, specs = resolve_model("zoo:demo")
    done = recover(prune(dense, make_inputs(specs), ratio=0.5).model, dense, load_mnist5k(), recovery)
    assert (manifest["dense_accuracy"], manifest["accuracy"]) == (done["dense_accuracy"], done["accuracy"])


# The demo's channel groups, each with a synthetic cost per kept channel (as tests/test_manifest.py).
_COST_MS = {"stem.0": 0.02, "layer1.0.conv1": 0.01, "layer2.0.conv1": 0.01, "layer2.0.downsample.0": 0.012,
            "layer3.0.conv1": 0.008, "layer3.0.downsample.0": 0.006}


class _LinearLatency:
    differentiable = True

    def ms_batch(self, widths):
        import torch

        return 0.1 + widths @ torch.tensor(list(_COST_MS.values()))


def _fake_target(model, _example_input) -> float:
    return 1.0 + sum(cost * model.get_submodule(name).out_channels for name, cost in _COST_MS.items())


def test_the_calibration_check_can_score_its_candidates_after_recovery(small_mnist, monkeypatch):
    import toolchain.budget_check as budget_check
    from toolchain.allocate import BudgetConfig
    from toolchain.budget import PredictorInfo, prune_to_budget

    distilled = []
    real_distill = budget_check.distill

    def counting_distill(model, dense, train, calib, config):
        distilled.append(config.finetune_steps)
        return real_distill(model, dense, train, calib, config)

    monkeypatch.setattr(budget_check, "distill", counting_distill)
    dense, _ = resolve_model("zoo:demo")
    config = BudgetConfig(budget_ratio=0.5, criterion="l1", allocator="knapsack", finetune_steps=0,
                          check_recovery_steps=2, recovered_selection_steps=0)
    result = prune_to_budget(dense, small_mnist.test[0][0].unsqueeze(0), config,
                             PredictorInfo(_LinearLatency(), "synthetic", None, {}), _fake_target, data=small_mnist)
    checks = [t["calibration_check"] for t in result.manifest["iterations"] if t.get("calibration_check")]
    assert checks and all(c["scored_after_distillation_steps"] == 2 and c["exchanges"] == 0 for c in checks)
    scored = {name for c in checks for name in c["losses"]}
    assert {"1.0", "0.0", "global"} <= scored  # the proposal, the uniform allocation, the global threshold
    assert distilled and set(distilled) == {2}
    assert len(distilled) <= sum(len(c["losses"]) for c in checks), "a width choice is trained once"


@pytest.mark.parametrize("field", ["check_recovery_steps", "recovered_selection_steps"])
def test_recovery_scored_steps_must_not_be_negative(field):
    from toolchain.allocate import BudgetConfig
    from toolchain.errors import ToolchainError

    with pytest.raises(ToolchainError, match=f"{field} must be >= 0"):
        BudgetConfig(budget_ratio=0.5, **{field: -1})


def test_the_allocation_is_shipped_only_where_it_recovers_better_than_the_uniform_one(small_mnist):
    from toolchain.allocate import BudgetConfig
    from toolchain.budget import PredictorInfo, prune_to_budget

    dense, _ = resolve_model("zoo:demo")
    config = BudgetConfig(budget_ratio=0.5, criterion="l1", allocator="knapsack", finetune_steps=0,
                          recovered_selection_steps=2)
    result = prune_to_budget(dense, small_mnist.test[0][0].unsqueeze(0), config,
                             PredictorInfo(_LinearLatency(), "synthetic", None, {}), _fake_target, data=small_mnist)
    selection = result.manifest["recovered_selection"]
    candidates = selection["candidates"]
    assert set(candidates) == {"knapsack", "uniform"} and selection["distillation_steps"] == 2
    losses = {name: c["calib_loss_after_recovery"] for name, c in candidates.items()}
    assert all(c["budget_met"] for c in candidates.values()) and selection["chosen"] == min(losses, key=losses.get)
    assert result.manifest["measured_latency_ms"] == candidates[selection["chosen"]]["measured_ms"]
    assert result.manifest["measured_latency_ms"] <= result.manifest["budget_ms"]
    assert "recovered_selection" in result.manifest["wall_s"]
