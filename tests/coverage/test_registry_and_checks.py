"""The coverage registry lists what the issue names, and the independent checks classify correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import ToolchainError
from toolchain.coverage import build, get_entry, list_entries
from toolchain.coverage.checks import (
    export_onnx_any_inputs,
    names_a_module,
    onnx_max_relative_error,
    shape_problem,
)


def test_every_torchvision_classification_and_segmentation_model_is_registered():
    torchvision = pytest.importorskip("torchvision")
    expected = set(torchvision.models.list_models(module=torchvision.models))
    expected |= set(torchvision.models.list_models(module=torchvision.models.segmentation))
    assert {k.split(":", 1)[1] for k in list_entries(library="torchvision")} == expected


def test_at_least_25_timm_families_and_every_library_named_in_the_issue():
    timm_families = {get_entry(k).family for k in list_entries(library="timm")}
    assert len(timm_families) >= 25
    assert {"vit", "deit", "swin", "regnety", "ghostnet", "rexnet", "levit", "fastvit"} <= timm_families
    assert set(list_entries(library="transformers")) >= {
        "transformers:bert", "transformers:vit", "transformers:convnext", "transformers:resnet", "transformers:swin",
        "transformers:mobilevit", "transformers:segformer", "transformers:whisper_encoder", "transformers:gpt2",
        "transformers:llama_gqa"}
    assert set(list_entries(library="ultralytics")) == {"ultralytics:yolov8n", "ultralytics:yolo11n"}


def test_every_family_has_one_test_representative():
    for library in ("torchvision", "timm", "transformers", "ultralytics"):
        families = {get_entry(k).family for k in list_entries(library=library)}
        represented = [get_entry(k).family for k in list_entries(library=library, representative=True)]
        assert sorted(represented) == sorted(families), library


def test_unknown_entry_and_size_are_one_line_errors():
    with pytest.raises(ToolchainError, match="unknown coverage entry 'timm:nope'; valid: "):
        get_entry("timm:nope")
    with pytest.raises(ToolchainError, match="unknown size 'huge'"):
        build("torchvision:resnet18", "huge")


def test_small_build_gives_named_token_inputs_and_a_cli_spec():
    built = build("transformers:bert", "small")
    assert list(built.inputs) == ["input_ids", "attention_mask"]
    assert built.inputs["input_ids"].dtype == torch.int64
    assert int(built.inputs["input_ids"].max()) < built.model.config.vocab_size
    assert built.cli.model == "hf:{workdir}/bert"
    assert built.cli.input_args == ("--input", "input_ids:int64:1,16", "--input", "attention_mask:int64:1,16")


def test_names_a_module_needs_a_dotted_path_or_a_quoted_name():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 1)), nn.ReLU())
    assert names_a_module("cannot prune module '0.0' (Conv2d)", model)
    assert names_a_module("cannot prune 0.0 here", model)
    assert not names_a_module("integer division or modulo by zero", model)
    assert not names_a_module("expected 1 channel, got 0", model)


def test_shape_problem_reports_count_shape_and_non_finite():
    dense = [torch.zeros(1, 4), torch.zeros(2)]
    assert shape_problem(dense, [torch.zeros(1, 4), torch.zeros(2)]) is None
    assert shape_problem(dense, [torch.zeros(1, 4)]) == "1 outputs instead of 2"
    assert shape_problem(dense, [torch.zeros(1, 3), torch.zeros(2)]) == "output 0 has shape (1, 3) instead of (1, 4)"
    assert shape_problem(dense, [torch.zeros(1, 4), torch.tensor([1.0, float("nan")])]) == \
        "output 1 has non-finite values"


class _TwoNamedInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 3)

    def forward(self, input_ids, scale):
        return {"logits": self.proj(self.embed(input_ids)) * scale}


def test_onnx_round_trip_with_named_integer_inputs(tmp_path):
    model = _TwoNamedInputs().eval()
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "scale": torch.tensor([2.0])}
    path = export_onnx_any_inputs(model, inputs, tmp_path / "model.onnx")
    assert onnx_max_relative_error(model, inputs, path) <= 1e-5
    with torch.no_grad():
        model.proj.bias.add_(1.0)  # the file no longer matches the module: the check sees it
    assert onnx_max_relative_error(model, inputs, path) > 1e-2


def test_weights_a_library_starts_at_zero_are_woken_so_checks_can_see_pruning_errors():
    import doctest

    import toolchain.coverage._registry as registry

    assert doctest.testmod(registry).failed == 0
    built = registry.build("torchvision:vit_b_16", "small")  # torchvision initialises the head to zero
    assert float(built.model.heads.head.weight.abs().sum()) > 0
    with torch.no_grad():
        assert float(built.model(built.inputs).abs().max()) > 0  # the output depends on the features again
    untouched = torch.nn.Linear(3, 2)
    before = untouched.weight.detach().clone()
    assert registry.wake_zero_weights(untouched) == [] and torch.equal(untouched.weight, before)
