"""The pruning graph: output protection, heads, frozen structures, random per-group widths."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tests.conftest import example_input
from toolchain import PruningGraph, ToolchainError, create_model, prune
from toolchain.graph import round_width


class TwoHeadDetector(nn.Module):
    """A detector-style net: shared backbone, a split/concat neck, two output heads."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.neck_a = nn.Conv2d(16, 16, 3, padding=1)
        self.neck_b = nn.Conv2d(16, 16, 3, padding=1)
        self.cls_head = nn.Conv2d(32, 5, 1)
        self.box_head = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        feats = self.backbone(x)
        a, b = torch.split(feats, 16, dim=1)
        neck = torch.cat([self.neck_a(a), self.neck_b(b)], dim=1)
        return {"cls": self.cls_head(neck), "box": self.box_head(neck)}


class ScaledNet(nn.Module):
    """A custom parameter (per-channel scale) that the pruner must shrink along with the conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 16, 1, 1))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.head(self.conv(x) * self.scale)


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.conv2 = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv2(self.grouped(self.conv1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_outputs_of_a_multi_output_model_are_protected_automatically():
    model = TwoHeadDetector().eval()
    x = torch.randn(1, 3, 16, 16)
    graph = PruningGraph(model, x)
    frozen = {f.name for f in graph.frozen}
    assert {"cls_head", "box_head"} <= frozen
    result = prune(model, x, ratio=0.5)
    out = result.model(x)
    assert out["cls"].shape == (1, 5, 16, 16) and out["box"].shape == (1, 4, 16, 16)
    assert result.manifest["params"] < result.manifest["dense_params"]


def test_classifier_outputs_keep_their_shape_without_a_protect_list():
    model = create_model("resnet56_cifar")
    graph = PruningGraph(model, example_input("resnet56_cifar"))
    assert "fc" in {f.name for f in graph.frozen}
    assert "fc" not in {g.name for g in graph.groups}


def test_custom_parameter_is_shrunk_with_its_channels():
    model = ScaledNet().eval()
    x = torch.randn(1, 3, 8, 8)
    result = prune(model, x, ratio=0.5, round_to=1)
    assert result.model.scale.shape == (1, 8, 1, 1)
    assert result.model(x).shape == (1, 8, 8, 8)


def test_grouped_convolution_is_pruned_by_whole_groups():
    model = GroupedNet().eval()
    x = torch.randn(1, 3, 8, 8)
    graph = PruningGraph(model, x)
    (group,) = [g for g in graph.groups if "conv1" in g.layers]
    assert group.unit == 4 and group.width == 16, "conv1 feeds 4 groups of 4 channels"
    assert "grouped" in group.layers
    with pytest.raises(ToolchainError, match="whole number of channel blocks"):
        graph.shrink({group.name: 6})
    result = prune(model, x, ratio=0.5)
    assert result.model.grouped.groups == 2 and result.model.grouped.weight.shape == (8, 4, 3, 3)
    assert result.model(x).shape == (1, 10)


def test_user_protected_layer_keeps_its_width():
    model = create_model("demo")
    x = example_input("demo")
    result = prune(model, x, ratio=0.5, protect=("stem.0",))
    assert result.model.stem[0].out_channels == 32
    assert result.model.layer2[0].conv1.out_channels == 32


def test_attention_is_pruned_in_whole_heads():
    model = create_model("vit_tiny")
    x = example_input("vit_tiny")
    graph = PruningGraph(model, x)
    heads = [g for g in graph.groups if g.kind == "heads"]
    assert len(heads) == 12 and all(g.unit == 64 and g.width == 192 for g in heads)
    assert heads[0].name == "blocks.0.attn.qkv", "groups are listed in model order"
    with pytest.raises(ToolchainError, match="whole number of heads"):
        graph.shrink({heads[0].name: 100})
    graph.shrink({heads[0].name: 64})
    attn = model.blocks[0].attn
    assert attn.num_heads == 1 and attn.qkv.out_features == 192 and attn.proj.in_features == 64
    assert model(x).shape == (1, 1000)


def test_widths_outside_range_are_refused():
    model = create_model("demo")
    graph = PruningGraph(model, example_input("demo"))
    name = graph.groups[0].name
    with pytest.raises(ToolchainError, match="outside"):
        graph.shrink({name: 0})
    with pytest.raises(ToolchainError, match="no prunable group"):
        graph.shrink({"nope": 3})


def test_dead_channels_are_removed_first():
    model = create_model("demo")
    x = example_input("demo")
    conv = model.layer1[0].conv1
    with torch.no_grad():
        conv.weight[:5].zero_()
        model.layer1[0].conv2.weight[:, :5].zero_()
    kept = conv.weight[5:].clone()
    graph = PruningGraph(model, x)
    graph.shrink({"layer1.0.conv1": 27})
    assert torch.equal(model.layer1[0].conv1.weight, kept)


@pytest.mark.parametrize(
    ("width", "dense", "multiple", "unit", "expected"),
    [(37.0, 64, 8, 1, 40), (3.0, 64, 8, 1, 8), (70.0, 64, 8, 1, 64), (3.2, 12, 8, 1, 8), (3.2, 6, 8, 1, 3),
     (100.0, 192, 8, 64, 128)],
)
def test_round_width(width, dense, multiple, unit, expected):
    assert round_width(width, dense, multiple, unit) == expected


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(["demo", "resnet56_cifar", "mobilenet_v2", "vit_tiny"]))
def test_random_per_group_ratios_give_a_working_smaller_model(data, name):
    model = create_model(name)
    x = example_input(name)
    graph = PruningGraph(model, x)
    ratios = {g.name: data.draw(st.floats(0.0, 0.9), label=g.name) for g in graph.groups}
    result = prune(model, x, group_ratios=ratios, round_to=data.draw(st.sampled_from([1, 4, 8])))
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape
    assert result.manifest["params"] <= result.manifest["dense_params"]
    for group, width in result.widths.items():
        assert 1 <= width <= result.manifest["dense_group_widths"][group]


def test_counting_macs_of_a_keyword_input_model_prints_nothing(capsys):
    """Torch-Pruning's counter printed a warning to stdout for keyword-only inputs, corrupting `--json`."""
    from toolchain.op_count import count_macs_params

    class KeywordOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(10, 8), torch.nn.Linear(8, 2)

        def forward(self, input_ids=None):
            return self.head(self.embed(input_ids))

    macs, params = count_macs_params(KeywordOnly(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    assert params == 10 * 8 + 8 * 2 + 2 and macs > 0
    assert capsys.readouterr().out == ""


class FailingNet(nn.Module):
    """A small net whose forward raises always, or only with gradients enabled ("grad")."""

    def __init__(self, when: str):
        super().__init__()
        self.when = when
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        if self.when == "always" or torch.is_grad_enabled():
            raise RuntimeError(f"fails {self.when}")
        return self.head(torch.relu(self.conv(x)))


@pytest.mark.parametrize(("when", "message"), [
    ("always", r"^the model rejects input shape \(1, 3, 8, 8\): RuntimeError: fails always$"),
    ("grad", r"^the model cannot be traced for pruning: RuntimeError: fails grad$"),
])
def test_the_trace_is_the_input_check_and_says_which_failed(when, message):
    """The graph's first forward is Torch-Pruning's trace (with gradients); when it fails in the model's own
    forward, the model is run once more untraced to tell a rejected input from a model that cannot be traced."""
    with pytest.raises(ToolchainError, match=message):
        prune(FailingNet(when).eval(), torch.randn(1, 3, 8, 8), ratio=0.5)


def test_an_in_place_prune_shrinks_the_model_itself_alike():
    """`in_place=True` (the CLI's ratio prune of a model it built) skips the copy of the weights; the widths,
    weights and counts are those of the copying prune."""
    x = example_input("resnet56_cifar")
    model = create_model("resnet56_cifar")
    copied = prune(model, x, ratio=0.5)  # a copy: `model` stays dense
    in_place = prune(model, x, ratio=0.5, in_place=True)
    assert in_place.model is model
    assert in_place.widths == copied.widths
    assert {k: in_place.manifest[k] for k in ("dense_params", "params", "dense_macs", "macs")} == \
        {k: copied.manifest[k] for k in ("dense_params", "params", "dense_macs", "macs")}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copied.model.state_dict().values()))


def test_the_pipeline_leaves_a_module_it_was_given_untouched(tmp_path):
    """Only a model the pipeline built itself is pruned in place; a module passed by the caller is copied."""
    from toolchain.pipeline import PipelineConfig, write_pruned_folder
    from toolchain.pruning import PruneConfig

    model = create_model("demo")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    write_pruned_folder(PipelineConfig(model=model, out=tmp_path / "pruned", data="none", input_shape=(1, 1, 28, 28),
                                       prune=PruneConfig(ratio=0.5)))
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    assert (tmp_path / "pruned" / "weights.safetensors").is_file()
