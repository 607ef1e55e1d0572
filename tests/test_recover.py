"""Recovery by default: distillation bounded by time with early stop, fixed steps for sweeps, off on request.

Tiny splits and a few steps: each test runs in a second or two. Nothing here asserts a duration; time-bounded
runs are made to stop on a condition that does not depend on the clock (the dense model's accuracy reached).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from toolchain.data import DataSplits, load_mnist5k
from toolchain.errors import ToolchainError
from toolchain.models import resolve_model
from toolchain.pruning import prune
from toolchain.recover import (
    EMPTY_TRAIN_SPLIT,
    NO_TRAIN_SPLIT,
    PLATEAU,
    REACHED_DENSE,
    STEPS_DONE,
    TIME_LIMIT,
    TURNED_OFF,
    RecoveryConfig,
    _TeacherCache,
    one_cycle_lr,
    recover,
)


@pytest.fixture(scope="module")
def small_mnist() -> DataSplits:
    splits = load_mnist5k()
    return DataSplits(Subset(splits.train, range(64)), Subset(splits.calib, range(32)),
                      Subset(splits.test, range(50)))


@pytest.fixture(scope="module")
def dense_and_pruned(small_mnist):
    dense, _ = resolve_model("zoo:demo")
    return dense, prune(dense, small_mnist.test[0][0].unsqueeze(0), ratio=0.5).model


def test_the_default_recovers_by_distillation_bounded_by_time():
    config = RecoveryConfig()
    assert config.mode == "seconds" and config.seconds > 0 and config.distill
    assert RecoveryConfig(finetune_steps=300).mode == "steps"  # a sweep's equal recovery: fixed steps
    assert RecoveryConfig(finetune_steps=0).mode == RecoveryConfig(distill=False).mode == "off"
    assert RecoveryConfig(seconds=0).mode == "off"


def _one_hot_task() -> tuple[nn.Module, DataSplits]:
    """Inputs are the one-hot code of their label: the identity layer is a perfect teacher."""
    labels = torch.arange(60) % 3
    data = TensorDataset(torch.eye(3)[labels], labels)
    teacher = nn.Linear(3, 3)
    with torch.no_grad():
        teacher.weight.copy_(torch.eye(3))
        teacher.bias.zero_()
    return teacher, DataSplits(data, data, data)


def test_a_time_bounded_run_stops_once_it_reaches_the_dense_models_calibration_accuracy():
    teacher, data = _one_hot_task()
    student = copy.deepcopy(teacher)  # starts at the teacher's accuracy, and lr 0 keeps it there
    progress = []
    done = recover(student, teacher, data, RecoveryConfig(seconds=600, eval_every=2, max_lr=0.0, batch_size=8,
                                                          early_stop_after=0.0),
                   on_progress=lambda done, total, what: progress.append((done, total, what)))
    report = done["recovery"]
    assert report["ran"] and report["mode"] == "seconds" and report["stop_reason"] == REACHED_DENSE
    assert report["steps"] == 2 == done["finetune_steps"] and report["seconds_limit"] == 600
    assert report["calib_accuracy_after"] == report["dense_calib_accuracy"] == 1.0
    assert {"seconds", "thread_cpu_seconds", "calib_accuracy_before"} <= set(report)
    assert "calibration accuracy" in progress[0][2] and progress[-1][0] == progress[-1][1] == 600  # bar closed


def test_a_time_bounded_run_stops_on_a_plateau_and_keeps_the_best_weights():
    teacher, data = _one_hot_task()
    student = nn.Linear(3, 3)
    nn.init.zeros_(student.weight)
    nn.init.zeros_(student.bias)  # predicts class 0 for everything: a third right, and lr 0 keeps it so
    done = recover(student, teacher, data, RecoveryConfig(seconds=600, eval_every=2, patience=3, max_lr=0.0,
                                                          batch_size=8, early_stop_after=0.0))
    report = done["recovery"]
    assert report["stop_reason"] == PLATEAU and report["steps"] == 2 * 3
    assert report["calib_accuracy_after"] == report["calib_accuracy_before"] == pytest.approx(1 / 3)


def test_no_early_stop_before_early_stop_after_share_of_the_time_bound():
    teacher, data = _one_hot_task()
    student = nn.Linear(3, 3)
    nn.init.zeros_(student.weight)
    nn.init.zeros_(student.bias)  # never improves (lr 0): only the time bound may end the run
    done = recover(student, teacher, data, RecoveryConfig(seconds=0.5, eval_every=1, patience=1, max_lr=0.0,
                                                          batch_size=8, early_stop_after=1.0))
    report = done["recovery"]
    assert report["stop_reason"] == TIME_LIMIT and report["steps"] > 1
    with pytest.raises(ToolchainError, match="early_stop_after"):
        RecoveryConfig(early_stop_after=1.5)


def test_fixed_steps_take_exactly_that_many_steps_and_improve_a_pruned_model(small_mnist, dense_and_pruned):
    dense, pruned = dense_and_pruned
    student = copy.deepcopy(pruned)
    done = recover(student, dense, small_mnist, RecoveryConfig(finetune_steps=6, eval_every=3))
    report = done["recovery"]
    assert (report["mode"], report["steps"], report["stop_reason"]) == ("steps", 6, STEPS_DONE)
    assert done["finetune_steps"] == 6 and not student.training
    # the same config gives the same weights (seeded shuffling, no clock in the schedule)
    again = copy.deepcopy(pruned)
    recover(again, dense, small_mnist, RecoveryConfig(finetune_steps=6, eval_every=3))
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))


def test_no_recover_and_data_without_a_train_split_recalibrate_batchnorm_only(small_mnist, dense_and_pruned):
    dense, pruned = dense_and_pruned
    done = recover(copy.deepcopy(pruned), dense, small_mnist, RecoveryConfig(distill=False))
    assert done["recovery"] == {"ran": False, "mode": "off", "stop_reason": TURNED_OFF, "steps": 0}
    assert done["accuracy"] == done["accuracy_after_bn_recalibration"]
    no_train = DataSplits(None, small_mnist.calib, small_mnist.test)
    done = recover(copy.deepcopy(pruned), dense, no_train)
    assert not done["recovery"]["ran"] and done["recovery"]["stop_reason"] == NO_TRAIN_SPLIT
    empty = DataSplits(Subset(small_mnist.train, []), small_mnist.calib, small_mnist.test)
    done = recover(copy.deepcopy(pruned), dense, empty, RecoveryConfig(seconds=600))  # ends at once, no busy loop
    assert done["recovery"]["stop_reason"] == EMPTY_TRAIN_SPLIT and done["recovery"]["steps"] == 0


def test_the_teacher_cache_returns_the_teachers_logits_computing_each_sample_once():
    teacher = nn.Linear(3, 2)
    calls = []
    teacher.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    inputs = torch.randn(5, 3)
    cache = _TeacherCache(teacher, size=5)
    first = cache(torch.tensor([0, 2]), inputs[[0, 2]])
    again = cache(torch.tensor([2, 4]), inputs[[2, 4]])  # sample 2 is cached, only 4 is computed
    with torch.no_grad():
        assert torch.allclose(first, teacher(inputs[[0, 2]])) and torch.allclose(again, teacher(inputs[[2, 4]]))
    assert calls[:2] == [2, 1]



def test_a_teacher_output_too_large_to_cache_is_computed_every_time(monkeypatch):
    monkeypatch.setattr("toolchain.recover.MAX_CACHED_LOGITS", 4)
    teacher = nn.Linear(3, 2)
    inputs = torch.randn(5, 3)
    cache = _TeacherCache(teacher, size=5)  # 5 samples x 2 logits > 4
    with torch.no_grad():
        assert torch.allclose(cache(torch.tensor([0, 1]), inputs[:2]), teacher(inputs[:2]))
        assert torch.allclose(cache(torch.tensor([1, 2]), inputs[1:3]), teacher(inputs[1:3]))
    assert cache.logits is None and cache.filled is None


def test_one_cycle_warms_up_then_anneals_to_zero():
    assert one_cycle_lr(0.0, 1.0) == pytest.approx(0.1) and one_cycle_lr(0.1, 1.0) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, 1.0) == pytest.approx(0.0) and one_cycle_lr(2.0, 1.0) == pytest.approx(0.0)
    assert one_cycle_lr(0.3, 1.0) > one_cycle_lr(0.6, 1.0) > one_cycle_lr(0.9, 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"seconds": -1.0}, "--recover-seconds must be >= 0"),
    ({"finetune_steps": -2}, "finetune steps must be >= 0"),
])
def test_bad_recovery_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ToolchainError, match=message):
        RecoveryConfig(**kwargs)


def test_a_tiny_user_dataset_smaller_than_two_batches_still_trains():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = TensorDataset(torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,)))
    done = recover(model, copy.deepcopy(model), DataSplits(data, data, data), RecoveryConfig(finetune_steps=3))
    assert done["recovery"]["steps"] == 3
