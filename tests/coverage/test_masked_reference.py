"""Torch-Pruning's result checked against the masked dense model, as the coverage benchmark checks it."""

from __future__ import annotations

import copy
import doctest
from types import SimpleNamespace

import pytest
import torch
import torch_pruning as tp
from torch import nn

from benchmarks.model_coverage import _masked_check
from toolchain.coverage import masked_reference as masked_reference_module
from toolchain.coverage.checks import run_outputs
from toolchain.coverage.masked_reference import (
    MASKED_MAX_REL_ERR,
    PrunedRoot,
    masked_reference,
    max_relative_error,
    prune_recording_roots,
)


class ResidualCNN(nn.Module):
    """conv-bn-relu-conv-bn, a residual add, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y)) + y
        return self.head(y.mean((2, 3)))


class ConcatCNN(nn.Module):
    """Two branches concatenated both ways round: whichever Torch-Pruning prunes first, the other's offset
    into one of `conv3`/`conv4` moves in its half-pruned model; the reference must take it in dense coordinates."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 12, 3, padding=1)
        self.conv3, self.conv4 = nn.Conv2d(20, 16, 1), nn.Conv2d(20, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
        y = self.conv3(torch.cat([a, b], dim=1)) + self.conv4(torch.cat([b, a], dim=1))
        return self.head(torch.relu(y).mean((2, 3)))


class TwoHeadAttention(nn.Module):
    """q/k/v projections reshaped into two heads by a fixed head count (`view(B, N, 2, -1)`)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.embed(x)
        b, n, _ = x.shape
        q, k, v = (layer(x).view(b, n, 2, -1).transpose(1, 2) for layer in (self.q, self.k, self.v))
        attention = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
        mixed = (attention @ v).transpose(1, 2).reshape(b, n, -1)
        return self.head(x + self.out(mixed))


class GroupNormCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.norm = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv2(torch.relu(self.norm(self.conv1(x))))
        return self.head(y.mean((2, 3)))


def _randomise_batch_norms(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so a channel's bias never cancels out."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)


def _prune_with_tp(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, list[PrunedRoot]]:
    """The benchmark's Torch-Pruning column on `model` (head ignored): the dense copy and the recorded roots."""
    model.eval()
    dense = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(model, inputs, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, ignored_layers=[model.head])
    return dense, prune_recording_roots(pruner)


@pytest.mark.parametrize("factory", [ResidualCNN, ConcatCNN])
def test_cnn_pruned_by_torch_pruning_equals_its_masked_dense_model(factory):
    model = factory()
    _randomise_batch_norms(model)
    inputs = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    dense_outputs = run_outputs(model, inputs)
    dense, roots = _prune_with_tp(model, inputs)
    assert roots and all(r.out_channels for r in roots)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())

    reference, why_not = masked_reference(dense, inputs, roots)

    assert why_not is None
    pruned_outputs = run_outputs(model, inputs)
    assert max_relative_error(reference, pruned_outputs) < MASKED_MAX_REL_ERR
    # the reference has teeth: the pruned model is far from the dense model unmasked
    assert max_relative_error(dense_outputs, pruned_outputs) > 100 * MASKED_MAX_REL_ERR
    # and the dense copy is left as it was
    assert max_relative_error(dense_outputs, run_outputs(dense, inputs)) == 0.0
    row = _masked_check(SimpleNamespace(model=model, inputs=inputs), dense, roots, limit_s=60)
    assert set(row) == {"masked_max_rel_err"} and row["masked_max_rel_err"] < MASKED_MAX_REL_ERR


def test_attention_whose_channels_torch_pruning_regroups_is_wrong():
    torch.manual_seed(0)
    model = TwoHeadAttention()
    inputs = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    dense_outputs = run_outputs(model, inputs)
    dense, roots = _prune_with_tp(model, inputs)
    pruned_outputs = run_outputs(model, inputs)
    assert model.v.out_features < dense.v.out_features  # v's channels went, and the two heads were refilled
    assert [o.shape for o in pruned_outputs] == [o.shape for o in dense_outputs]  # the old checks pass

    reference, why_not = masked_reference(dense, inputs, roots)

    assert why_not is None
    assert max_relative_error(reference, pruned_outputs) > 10 * MASKED_MAX_REL_ERR
    row = _masked_check(SimpleNamespace(model=model, inputs=inputs), dense, roots, limit_s=60)
    assert row["status"] == "wrong"
    assert row["detail"].startswith("differs from the masked dense model: max relative error ")
    assert row["masked_max_rel_err"] > 10 * MASKED_MAX_REL_ERR


def test_group_norm_with_several_groups_has_no_masked_reference():
    model = GroupNormCNN()
    inputs = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    dense, roots = _prune_with_tp(model, inputs)
    assert any(r.module == "conv1" for r in roots)

    reference, why_not = masked_reference(dense, inputs, roots)

    assert reference is None
    assert "GroupNorm at norm (4 groups)" in why_not
    row = _masked_check(SimpleNamespace(model=model, inputs=inputs), dense, roots, limit_s=60)
    assert row == {"masked_check": f"not possible: {why_not}"}


def test_a_root_missing_from_the_dense_copy_is_a_reason_not_an_error():
    model = ResidualCNN()
    reference, why_not = masked_reference(model, torch.randn(1, 3, 8, 8), [PrunedRoot("nope", True, (0,))])
    assert reference is None and why_not == "no prunable layer 'nope' in the dense copy"


def test_module_doctests():
    result = doctest.testmod(masked_reference_module, extraglobs={"torch": torch})
    assert result.attempted >= 2 and result.failed == 0
