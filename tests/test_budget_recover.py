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
