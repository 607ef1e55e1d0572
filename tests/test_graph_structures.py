"""Structures from users' models: grouped convolutions, reused channels, YOLO, channel shuffle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import PruningGraph, ToolchainError, prune


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 (8 groups of 4) -> 1x1 with a residual, as in ResNeXt/RegNet."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=8), nn.BatchNorm2d(32), nn.ReLU())
        self.expand = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.expand(self.grouped(self.reduce(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_grouped_convolution_loses_whole_groups_and_matches_the_masked_model():
    model = ResNeXtBlock().eval()
    x = torch.randn(2, 3, 8, 8)
    dense_params = _params(model)
    result = prune(model, x, ratio=0.5)  # the shrink itself checks against the masked dense model
    conv = result.model.grouped[0]
    assert conv.groups == 4 and conv.in_channels == conv.out_channels == 16
    assert conv.weight.shape == (16, 4, 3, 3), "channels per group are kept"
    assert result.model(x).shape == (2, 10)
    assert _params(result.model) < 0.6 * dense_params


def test_channel_multiplier_convolution_loses_an_input_with_its_outputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.Conv2d(16, 4, 1))
    x = torch.randn(1, 3, 6, 6)
    graph = PruningGraph(model.eval(), x)
    (group,) = [g for g in graph.groups if "1" in g.layers]
    assert group.unit == 2 and group.width == 16 and "0" in group.layers, "one input, two outputs per group"
    graph.shrink({group.name: 8})
    assert model[1].groups == 4 and model[1].out_channels == 8 and model[0].out_channels == 4
    assert model(x).shape == (1, 4, 6, 6)


def test_grouped_transposed_convolution_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ConvTranspose2d(8, 8, 2, stride=2, groups=2), nn.Conv2d(8, 4, 1))
    graph = PruningGraph(model.eval(), torch.randn(1, 3, 4, 4))
    reasons = " ".join(f.reason for f in graph.frozen)
    assert "grouped transposed convolution" in reasons and "at 1" in reasons


timm = pytest.importorskip("timm", reason="timm is not installed")


@pytest.mark.slow
@pytest.mark.parametrize("name, most_kept", [("regnety_002", 0.45), ("ghostnet_050", 0.6)])
def test_timm_grouped_and_ghost_models_are_pruned(name, most_kept):
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    result = prune(model, x, ratio=0.5)
    assert result.model(x).shape == (1, 1000)
    assert result.manifest["params"] < most_kept * result.manifest["dense_params"]
    assert not any("grouped" in reason for reason in result.manifest["frozen_groups"].values())


def _pruned_or_refused_by_name(model: nn.Module, x: torch.Tensor, names: set[str]):
    """Prune at 0.5: a model with every output shape kept, or a one-line refusal naming a module."""
    try:
        return prune(model, x, ratio=0.5)
    except ToolchainError as exc:
        message = str(exc)
        assert "\n" not in message and any(repr(n) in message for n in names if n), message
        return None


@pytest.mark.slow
@pytest.mark.parametrize("config", ["yolov8n.yaml", "yolo11n.yaml"])
def test_yolo_from_yaml_is_pruned_with_detect_outputs_kept(config, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    ultralytics = pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    model = ultralytics.YOLO(config).model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense = [t.shape for t in _tensors(model(x))]
    result = _pruned_or_refused_by_name(model, x, {n for n, _ in model.named_modules()})
    if result is not None:
        with torch.no_grad():
            assert [t.shape for t in _tensors(result.model(x))] == dense
        assert result.manifest["params"] < result.manifest["dense_params"]
        assert any("model.22" in name or "model.23" in name for name in result.manifest["frozen_groups"])


def test_yolo11n_graph_build_completes(tmp_path, monkeypatch):
    """Building the graph once ran for minutes (index lists multiplied through attention reshapes)."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    ultralytics = pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    model = ultralytics.YOLO("yolo11n.yaml").model.eval()
    graph = PruningGraph(model, torch.randn(1, 3, 64, 64))
    assert graph.groups
    assert any("model.23" in f.name for f in graph.frozen), "the Detect head's outputs stay protected"


def test_shufflenet_channel_shuffle_is_pruned_or_refused_by_name():
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    model = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    result = _pruned_or_refused_by_name(model, x, {n for n, _ in model.named_modules()})
    if result is not None:
        assert result.model(x).shape == (1, 1000)
        assert result.manifest["params"] < result.manifest["dense_params"]


def _tensors(output) -> list[torch.Tensor]:
    from toolchain.inputs import flatten_outputs

    return flatten_outputs(output)
