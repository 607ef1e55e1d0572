"""Sparse modules and the drop-in swap against the masked dense model."""

import copy

import pytest
import torch
from torch import nn

from toolchain.kernels.modules import SparseConv2d, SparseLinear
from toolchain.kernels.patterns import Pattern, pattern_mask
from toolchain.kernels.sparsify import SparsifyConfig, apply_pattern_, eligible_layers, sparsify_

TOL = {"rtol": 1e-4, "atol": 1e-4}


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
        nn.Conv2d(12, 20, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(20, 18, 1), nn.ReLU(),
        nn.Conv2d(18, 18, 3, groups=3, padding=1),  # grouped: not eligible, stays dense
        nn.Flatten(), nn.Linear(18 * 5 * 5, 10),
    ).eval()


@pytest.mark.parametrize("pattern", ["2:4", "1:3", "block4x4", "block1x4", "stripe", "unify2x4"])
def test_sparsify_reproduces_the_masked_dense_model_on_cpu(pattern):
    model = _small_cnn()
    config = SparsifyConfig(pattern=pattern, sparsity=0.6, min_features=3)
    masked = copy.deepcopy(model)
    apply_pattern_(masked, config)
    replaced = sparsify_(model, config)
    expected = ["0", "2", "4"] if pattern == "stripe" else ["0", "2", "4", "8"]
    assert replaced == expected
    assert isinstance(model[0], SparseConv2d) and isinstance(model[6], nn.Conv2d)
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(model(x), masked(x), **TOL)


def test_sparsify_without_pruning_rejects_weights_off_the_pattern():
    model = _small_cnn()
    with pytest.raises(ValueError, match="does not follow the 2:4 pattern"):
        sparsify_(model, SparsifyConfig(pattern="2:4", prune=False, min_features=3))


def test_filter_and_min_features_keep_layers_dense():
    model = _small_cnn()
    config = SparsifyConfig(pattern="block4x4", min_features=12)
    assert eligible_layers(model, config) == ["2", "4"]  # conv 0 has 3 inputs, linear 8 has 10 outputs
    config = SparsifyConfig(pattern="block4x4", min_features=10)
    assert sparsify_(model, config, filter_fn=lambda module, name: name != "8") == ["2", "4"]
    assert isinstance(model[8], nn.Linear)


@pytest.mark.parametrize("pattern", ["2:4", "block16x16", "stripe"])
def test_sparse_conv_through_triton_matches_the_dense_conv(triton_device, pattern):
    pytest.importorskip("triton", reason="triton is not installed")
    torch.manual_seed(0)
    conv = nn.Conv2d(20, 17, 3, stride=2, padding=1, dilation=1).to(triton_device)
    with torch.no_grad():
        conv.weight.mul_(pattern_mask(conv.weight, Pattern.parse(pattern), sparsity=0.5))
    sparse = SparseConv2d.from_dense(conv, Pattern.parse(pattern), backend="triton")
    x = torch.randn(2, 20, 7, 6, device=triton_device)
    torch.testing.assert_close(sparse(x), conv(x), **TOL)


def test_sparse_linear_through_triton_keeps_leading_dims(triton_device):
    pytest.importorskip("triton", reason="triton is not installed")
    torch.manual_seed(0)
    linear = nn.Linear(30, 21).to(triton_device)
    with torch.no_grad():
        linear.weight.mul_(pattern_mask(linear.weight, Pattern.parse("2:4")))
    sparse = SparseLinear.from_dense(linear, Pattern.parse("2:4"), backend="triton")
    x = torch.randn(2, 3, 30, device=triton_device)
    torch.testing.assert_close(sparse(x), linear(x), **TOL)


def test_sparse_modules_reject_malformed_inputs():
    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.mul_(pattern_mask(linear.weight, Pattern.parse("2:4")))
    sparse = SparseLinear.from_dense(linear, Pattern.parse("2:4"))
    with pytest.raises(ValueError, match="input is torch.float64"):
        sparse(torch.randn(2, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="16 input features"):
        sparse(torch.randn(2, 15))
    with pytest.raises(ValueError, match="float32 only"):
        sparse.half()(torch.randn(2, 16).half())
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2), Pattern.parse("block4x4"))
    conv = SparseConv2d.from_dense(nn.Conv2d(4, 4, 1), Pattern.parse("block4x4"))
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="unknown backend"):
        conv = SparseConv2d.from_dense(nn.Conv2d(4, 4, 1), Pattern.parse("block4x4"), backend="tvm")
        conv(torch.randn(1, 4, 2, 2))


def test_sparse_state_dict_round_trips():
    linear = nn.Linear(24, 8)
    sparse = SparseLinear.from_dense(linear, Pattern.parse("block4x4"))
    clone = SparseLinear.from_dense(nn.Linear(24, 8), Pattern.parse("block4x4"))
    clone.load_state_dict(sparse.state_dict())
    x = torch.randn(3, 24)
    torch.testing.assert_close(clone(x), linear(x), **TOL)
