"""The shrink check looks inside the model: outputs blind to what feeds them cannot hide a wrong shrink."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import PruningGraph, ToolchainError, prune
from toolchain.graph_probes import recording_module_outputs, signal_kept_in_range, worst_module_mismatch


def _corrupt_after_pruning(monkeypatch, graph: PruningGraph, corrupt) -> None:
    """Make the graph's shrink wrong: `corrupt()` changes the model after each group is pruned."""
    prune_group = graph._prune_group

    def prune_and_corrupt(*args):
        tp_group = prune_group(*args)
        with torch.no_grad():
            corrupt()
        return tp_group

    monkeypatch.setattr(graph, "_prune_group", prune_and_corrupt)


def _zero_classifier_net() -> nn.Sequential:
    """Two hidden layers and a classifier initialised to zero (as torchvision's ViT heads are)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    nn.init.zeros_(model[4].weight)
    nn.init.zeros_(model[4].bias)
    return model.eval()


# Outputs blind to the hidden layers: a bias of 1e6 (their error is 1e-6 relative), or a classifier of weight
# 1e-30 (GoogLeNet built without weights: the features vanish, the logits are the classifier's bias). A shrink that
# shifts layer '2' (unchanged shape) or layer '0' (narrowed: compared on its kept channels) is refused by name.
@pytest.mark.parametrize(("weight", "bias", "corrupted"), [(1e-3, 1e6, 2), (1e-30, 1.0, 0)])
def test_a_wrong_shrink_is_refused_where_the_outputs_cannot_see_it(monkeypatch, weight, bias, corrupted):
    model, x = _zero_classifier_net(), torch.randn(4, 8)
    with torch.no_grad():
        model[4].weight.fill_(weight)
        model[4].bias.fill_(bias)
    graph = PruningGraph(model, x)
    _corrupt_after_pruning(monkeypatch, graph, lambda: model[corrupted].bias.add_(1.0))
    with pytest.raises(ToolchainError, match=rf"at the output of module '{corrupted}'"):
        graph.shrink({graph.group("0").name: 8})


def test_a_correct_shrink_compares_the_unchanged_module_outputs():
    model, x = _zero_classifier_net(), torch.randn(4, 8)
    graph = PruningGraph(model, x)
    graph.shrink({graph.group("0").name: 8})
    # '2', '3' and '4' keep their shapes; '0' went from 16 to 8 wide and is compared on its kept channels;
    # '1' (a ReLU, which Torch-Pruning does not prune as a layer) is not compared
    assert graph.verified_module_outputs == 4 and graph.verified_error < 1e-6
    assert model[0].out_features == 8 and model[2].in_features == 8
    result = prune(_zero_classifier_net(), x, ratio=0.5, round_to=1)
    assert result.manifest["verified_module_outputs"] >= 1  # the classifier's output, at least


def test_the_reference_records_only_the_kept_channels_of_a_narrowed_output():
    model = nn.Sequential(nn.Conv2d(1, 4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(4.0).view(4, 1, 1, 1))
        model[0].bias.zero_()
    with recording_module_outputs(model, {"0": (1, 4, {0, 2})}) as records:
        model(torch.ones(1, 1, 1, 1))
    ((shape, sample),) = records["0"][0]
    assert shape == (1, 2, 1, 1) and sample.tolist() == [1.0, 3.0]


def test_torchvision_vit_with_its_zero_head_is_checked_inside():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    assert int(torch.count_nonzero(model.heads.head.weight.detach())) == 0
    result = prune(model, x, ratio=0.5)
    assert result.manifest["verified_module_outputs"] > 10  # encoder blocks, attention outputs, norms
    assert result.manifest["verified_relative_error"] < 1e-4


def test_mismatch_names_the_first_module_over_tolerance_and_skips_changed_shapes():
    dense = {"a": [[((2, 4), torch.ones(8))]], "b": [[((2, 2), torch.ones(4))]], "c": [[((3,), torch.ones(3))]]}
    got = {"a": [[((2, 2), torch.zeros(4))]], "b": [[((2, 2), torch.full((4,), 1.5))]],
           "c": [[((3,), torch.full((3,), 3.0))]]}
    worst, first, compared = worst_module_mismatch(dense, got, tolerance=1e-4)
    assert (worst, first, compared) == (2.0, "b", 2)


def test_recorded_samples_are_copies_bounded_in_size():
    model = nn.Sequential(nn.Linear(4, 10_000), nn.ReLU(inplace=True))
    with recording_module_outputs(model) as records:
        model(torch.randn(1, 4))
    (linear_call,), (relu_call,) = records["0"], records["1"]
    (shape, sample), _ = linear_call[0], relu_call[0]
    assert shape == (1, 10_000) and sample.numel() <= 4096
    assert float(sample.min()) < 0, "the in-place ReLU after it must not change the recorded sample"


def test_the_summary_says_how_much_of_the_model_the_shrink_check_saw():
    from toolchain.manifest import Manifest, summary_lines

    result = prune(_zero_classifier_net(), torch.randn(4, 8), ratio=0.5, round_to=1)
    manifest = Manifest.from_json({**result.manifest, "onnx_max_rel_err": 0.0})
    compared = result.manifest["verified_module_outputs"]
    line = next(line for line in summary_lines(manifest) if "shrink verified" in line)
    assert line.endswith(f"over the outputs and {compared} module outputs")


class _ZeroInitResidual(nn.Module):
    """A residual block whose branch ends in a BatchNorm initialised to zero (timm's `zero_init_last`)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        nn.init.zeros_(self.bn2.weight)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def test_a_wrong_shrink_behind_a_zero_initialised_norm_is_refused(monkeypatch):
    model, x = _ZeroInitResidual().eval(), torch.randn(2, 3, 8, 8)
    graph = PruningGraph(model, x)
    # changes the branch, which a zero bn2 would silence
    _corrupt_after_pruning(monkeypatch, graph, lambda: model.bn1.bias.add_(1.0))
    with pytest.raises(ToolchainError, match="does not compute what the dense model computes"):
        graph.shrink({graph.group("conv1").name: 8})
    assert int(torch.count_nonzero(model.bn2.weight.detach())) == 0, "zeroed again after a refusal too"


def test_weights_woken_for_the_check_are_zero_again_in_the_model_handed_back():
    model, x = _ZeroInitResidual().eval(), torch.randn(2, 3, 8, 8)
    result = prune(model, x, ratio=0.5, round_to=1)
    assert result.model.bn2.weight.shape[0] < 8 and int(torch.count_nonzero(result.model.bn2.weight.detach())) == 0
    assert result.manifest["verified_relative_error"] < 1e-4


def _fading_net() -> nn.Sequential:
    """Five linear layers with weights of about 1e-9: the signal underflows float32 by the last one."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(a, b) for a, b in ((8, 16), (16, 16), (16, 16), (16, 16), (16, 4))))
    with torch.no_grad():
        for layer in model:
            layer.weight.mul_(1e-9)
            layer.bias.zero_()
    return model.eval()


def test_a_wrong_shrink_is_refused_where_the_signal_has_faded_below_float32(monkeypatch):
    model, x = _fading_net(), torch.randn(2, 8)
    with torch.no_grad():
        assert float(model(x).abs().max()) == 0.0, "the dense outputs underflow: they cannot see any shrink"
    graph = PruningGraph(model, x)
    # flips the sign of the layer after the pruned one
    _corrupt_after_pruning(monkeypatch, graph, lambda: model[3].weight.neg_())
    with pytest.raises(ToolchainError, match="does not compute what the dense model computes"):
        graph.shrink({graph.group("2").name: 8})


def test_a_correct_shrink_of_a_fading_net_passes_and_its_weights_are_unchanged():
    model, x = _fading_net(), torch.randn(2, 8)
    kept_rows = model[2].weight.detach().clone()
    graph = PruningGraph(model, x)
    graph.shrink({graph.group("2").name: 8}, scores={graph.group("2").name: torch.arange(16.0)})
    assert graph.verified_error < 1e-4 and graph.verified_module_outputs >= 4
    assert torch.equal(model[2].weight.detach(), kept_rows[8:]), "scaled for the check only, bit for bit"


def test_faded_outputs_are_scaled_by_powers_of_two_chosen_once_and_replayed():
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.fill_(1e-20)
        model[0].bias.zero_()
    shifts: dict[str, list[int]] = {}
    with signal_kept_in_range(model, shifts):
        first = model(torch.ones(1, 2))
    assert 0.5 <= float(first.abs().max()) < 1.0 and len(shifts["0"]) == 1
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    with signal_kept_in_range(model, shifts):  # replayed: the same power, so twice the weight is twice the output
        second = model(torch.ones(1, 2))
    assert torch.equal(second, first * 2)
