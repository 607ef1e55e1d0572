"""MAC counting on a meta copy gives Torch-Pruning's numbers without copying weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import example_input
from toolchain import create_model, op_count
from toolchain.op_count import count_macs_params


class _NeedsValues(nn.Module):
    """A forward that reads a value (as transformers' attention masks do): impossible on meta tensors."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * (2 if float(x.sum().item()) > 0 else 1)


@pytest.mark.parametrize("name", ["demo", "resnet56_cifar", "vit_tiny"])
def test_meta_count_equals_the_copying_count(monkeypatch, name):
    model = create_model(name).eval()
    x = example_input(name)
    expected = op_count._count(model, x)
    monkeypatch.setattr(op_count, "META_COUNT_MIN_PARAMS", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_macs_params(model, x) == expected
    assert all(v.device.type == "cpu" and torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_forward_that_needs_values_falls_back_to_real_tensors(monkeypatch):
    monkeypatch.setattr(op_count, "META_COUNT_MIN_PARAMS", 0)
    model = _NeedsValues().train()
    assert count_macs_params(model, torch.ones(2, 4)) == op_count._count(model, torch.ones(2, 4))
    assert model.training, "the caller's mode is restored"


def test_meta_copy_keeps_the_structure_without_storage():
    model = create_model("demo")
    copied = op_count.meta_copy(model)
    assert [type(m) for m in copied.modules()] == [type(m) for m in model.modules()]
    assert {k: v.shape for k, v in copied.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert all(v.device.type == "meta" for v in copied.state_dict().values())
    assert all(v.device.type == "cpu" for v in model.state_dict().values()), "the original keeps its weights"
