"""The public face of toolchain.latency: list_predictors, load_predictor, predict (on the shipped artifacts)."""

import doctest
from pathlib import Path

import pytest
import torch

import toolchain.latency as latency
from toolchain.errors import ToolchainError
from toolchain.latency import list_predictors, load_predictor, predict
from toolchain.latency.predictors import LatencyQuery
from toolchain.targets import Target

SHIPPED = ("resnet18-cpu-onnxruntime-lpnet", "resnet18-cpu-onnxruntime-layerwise",
           "mobilenet-v2-cpu-onnxruntime-lpnet", "mobilenet-v2-cpu-onnxruntime-layerwise")


def test_docstring_examples_run():
    result = doctest.testmod(latency, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted >= 8 and result.failed == 0


def test_the_shipped_predictors_are_listed_and_load_by_name_or_folder():
    assert set(SHIPPED) <= set(list_predictors())
    by_name = load_predictor("resnet18-cpu-onnxruntime-lpnet")
    by_folder = load_predictor(Path(latency.__file__).parent / "artifacts" / "resnet18-cpu-onnxruntime-lpnet")
    assert by_name.meta == by_folder.meta


def test_predictors_built_here_are_listed_after_the_shipped_ones(tmp_path, monkeypatch):
    shipped = load_predictor("resnet18-cpu-onnxruntime-layerwise")
    monkeypatch.chdir(tmp_path)
    shipped.save(tmp_path / "runs" / "predictors" / "mine")
    (tmp_path / "runs" / "predictors" / "not-an-artifact").mkdir()
    assert "mine" in list_predictors() and "not-an-artifact" not in list_predictors()
    assert load_predictor("mine").meta == shipped.meta


def test_an_unknown_name_is_one_clear_error():
    with pytest.raises(ToolchainError, match="no predictor 'nope': neither an artifact folder nor one of .*resnet18"):
        load_predictor("nope")


def test_a_target_refuses_a_predictor_fitted_for_another():
    assert load_predictor("resnet18-cpu-onnxruntime-lpnet", Target("cpu")).meta.threads == 1
    with pytest.raises(ToolchainError, match="trained for cpu/onnxruntime/1t, not cpu/onnxruntime/2t"):
        load_predictor("resnet18-cpu-onnxruntime-lpnet", Target("cpu", threads=2))


def test_predict_by_widths_and_by_model_agree_with_the_predictor():
    from toolchain.models import create_model

    lpnet = load_predictor("resnet18-cpu-onnxruntime-lpnet")
    widths = {"layer4.0.conv1": 256, "stem.0": 48}
    query = LatencyQuery("zoo:resnet18", (1, 3, 224, 224), widths, ())
    assert predict(lpnet, widths) == pytest.approx(lpnet.predict_ms(query))
    assert predict("resnet18-cpu-onnxruntime-lpnet", widths) == pytest.approx(lpnet.predict_ms(query))
    dense = create_model("resnet18")
    assert predict(lpnet, dense) == pytest.approx(predict(lpnet, {}))
    layerwise = load_predictor("resnet18-cpu-onnxruntime-layerwise")
    at_224 = predict(layerwise, dense)
    assert at_224 > 0 and predict(layerwise, dense, torch.randn(1, 3, 112, 112)) < at_224


def test_a_layer_reading_predictor_needs_the_model():
    with pytest.raises(ToolchainError, match="'layerwise' predictor reads a model's layers, not widths"):
        predict(load_predictor("resnet18-cpu-onnxruntime-layerwise"), {"stem.0": 32})
