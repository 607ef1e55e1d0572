"""Channel-scale modules and weight-standardized convolutions: pruned exactly, not refused."""

import pytest
import torch
from torch import nn

from toolchain import prune
from toolchain.graph_scale import fold_weight_standardization

timm_layers = pytest.importorskip("timm.layers", reason="timm is not installed")
metaformer = pytest.importorskip("timm.models.metaformer", reason="timm is not installed")


def _standardized_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(timm_layers.ScaledStdConv2dSame(3, 16, 3, stride=2), nn.ReLU(),
                         timm_layers.StdConv2d(16, 16, 3), nn.ReLU(), timm_layers.ScaledStdConv2d(16, 8, 1))


def test_folding_keeps_what_the_model_computes():
    model, x = _standardized_net().eval(), torch.randn(2, 3, 17, 17)
    expected = model(x)
    folded = fold_weight_standardization(model)
    assert folded == ["0", "2", "4"]
    assert not any(isinstance(m, timm_layers.std_conv.StdConv2d) for m in model.modules())
    assert type(model[0]).__name__ == "Conv2dSame"  # dynamic "same" padding kept
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_standardized_convs_lose_input_channels_and_pass_the_shrink_check():
    model, x = _standardized_net().eval(), torch.randn(1, 3, 17, 17)
    result = prune(model, x, ratio=0.5)
    assert result.model[2].in_channels < 16 and result.model(x).shape == model(x).shape
    assert result.manifest["verified_relative_error"] is not None
    assert isinstance(model[0], timm_layers.ScaledStdConv2dSame)  # the user's model is left as it was


class _ScaleBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.scale, self.conv2 = nn.Conv2d(3, 16, 3), metaformer.Scale(16), nn.Conv2d(16, 4, 1)
        with torch.no_grad():
            self.scale.scale.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.conv2(self.scale(torch.relu(self.conv1(x))))


def test_scale_parameter_and_its_view_shape_follow_the_channels():
    model, x = _ScaleBlock().eval(), torch.randn(1, 3, 9, 9)
    result = prune(model, x, ratio=0.5)
    kept = result.model.conv1.out_channels
    assert kept < 16
    assert result.model.scale.scale.shape == (kept,) and result.model.scale.shape == (kept, 1, 1)
    assert result.model(x).shape == model(x).shape
    assert result.manifest["verified_relative_error"] is not None


def test_a_folded_model_reloads_from_its_folder(tmp_path):
    """The reload builds the dense model again (standardized convs): it repeats the fold before resizing."""
    from toolchain import load_pruned
    from toolchain.archive import write_arch_and_weights
    from toolchain.inputs import specs_of

    model, x = _standardized_net().eval(), torch.randn(1, 3, 17, 17)
    result = prune(model, x, ratio=0.5)
    write_arch_and_weights(tmp_path, result.model, model, "unused", specs_of(x), result.widths)
    rebuilt, arch = load_pruned(tmp_path, model=_standardized_net().eval())
    assert arch["folded_standardized_convs"] == ["0", "2", "4"]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))
