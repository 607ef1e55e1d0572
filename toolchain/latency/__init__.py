"""Latency prediction, the public face: list the fitted predictors, load one, predict a model's latency in ms.

Shaped like nn-Meter's (`list_latency_predictors()`, `load_latency_predictor(name)`, `predict(model)`). A
predictor is an artifact folder written by `toolchain fit` or by a budget run; the ones shipped with the
toolchain live in toolchain/latency/artifacts, those built on the fly in runs/predictors.

    >>> "resnet18-cpu-onnxruntime-lpnet" in list_predictors()
    True
    >>> lpnet = load_predictor("resnet18-cpu-onnxruntime-lpnet")    # a name from list_predictors(), or a folder
    >>> dense_ms = predict(lpnet, {})                                # widths by channel group; {}: the dense model
    >>> predict(lpnet, {"layer4.0.conv1": 128}) < dense_ms           # half of one block's channels: faster
    True

Below the face: `measure` (the timing harness), `campaign` (profiling), `fitting`, `provision` (names and
finds or builds a target's predictor), `timing` (a model timed on a Target), `predictors` (the kinds).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs, make_inputs, specs_from_key, specs_key, specs_of, vocab_size_of
from toolchain.latency.predictors import LatencyPredictor, LatencyQuery
from toolchain.latency.predictors import load_predictor as _load_artifact
from toolchain.latency.predictors.artifact import META_FILE
from toolchain.latency.provision import PREDICTOR_DIR
from toolchain.targets import Target

SHIPPED_DIR = Path(__file__).parent / "artifacts"


def _artifact_dirs() -> tuple[Path, ...]:
    """Where predictors are looked up by name, in order: shipped with the toolchain, then built here."""
    return SHIPPED_DIR, Path(PREDICTOR_DIR)


def _found() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in _artifact_dirs():
        if folder.is_dir():
            for artifact in sorted(folder.iterdir()):
                if (artifact / META_FILE).is_file():
                    found.setdefault(artifact.name, artifact)
    return found


def list_predictors() -> list[str]:
    """Names of the predictor artifacts found (shipped ones, then those in runs/predictors), sorted.

    >>> [name for name in list_predictors() if name.startswith("mobilenet-v2")]
    ['mobilenet-v2-cpu-onnxruntime-layerwise', 'mobilenet-v2-cpu-onnxruntime-lpnet']
    """
    return sorted(_found())


def load_predictor(path_or_name: str | Path, target: Target | None = None) -> LatencyPredictor:
    """The predictor in an artifact folder, or the one `list_predictors()` names; given a target, refuse one
    fitted on another device, backend or thread count.

    >>> predictor = load_predictor("resnet18-cpu-onnxruntime-layerwise")   # a shipped artifact, by name
    >>> (predictor.meta.predictor, predictor.meta.target_label)
    ('layerwise', 'cpu/onnxruntime/1t')
    >>> load_predictor("resnet18-cpu-onnxruntime-lpnet", Target("cpu", threads=4))
    Traceback (most recent call last):
    toolchain.errors.ToolchainError: predictor artifact was trained for cpu/onnxruntime/1t, not cpu/onnxruntime/4t; ...
    """
    path = Path(path_or_name)
    if not (path / META_FILE).is_file():
        found = _found()
        if str(path_or_name) not in found:
            raise ToolchainError(f"no predictor {str(path_or_name)!r}: neither an artifact folder nor one of "
                                 f"{', '.join(sorted(found)) or 'none'} (toolchain.latency.list_predictors())")
        path = found[str(path_or_name)]
    if target is None:
        return _load_artifact(path)
    runtime = target.resolve()
    return _load_artifact(path, runtime.name, runtime.backend, runtime.threads)


def predict(predictor: LatencyPredictor | str | Path, model_or_widths: nn.Module | Mapping[str, int],
            example_input: ModelInputs | None = None) -> float:
    """Predicted latency in ms of a model (any predictor) or of per-group widths (lpnet: groups not named stay
    dense). A model is read at `example_input`'s shape, by default the shape the predictor was fitted at.

    >>> from toolchain.models import create_model
    >>> lpnet = load_predictor("resnet18-cpu-onnxruntime-lpnet")
    >>> predict(lpnet, create_model("resnet18")) == predict(lpnet, {})   # the dense model: every group dense
    True
    >>> predict(lpnet, {"stem.0": 32}) < predict(lpnet, {})
    True
    """
    if not isinstance(predictor, LatencyPredictor):
        predictor = load_predictor(predictor)
    if isinstance(model_or_widths, nn.Module):
        query = _model_query(predictor, model_or_widths, example_input)
    else:
        query = _widths_query(predictor, dict(model_or_widths))
    return predictor.predict_ms(query)


def _single_model(predictor: LatencyPredictor) -> str | None:
    models = predictor.meta.models
    return models[0] if len(models) == 1 else None


def _widths_query(predictor: LatencyPredictor, widths: dict[str, int]) -> LatencyQuery:
    model = _single_model(predictor)
    if not predictor.single_architecture or model is None:
        raise ToolchainError(f"a {predictor.name!r} predictor reads a model's layers, not widths: pass the model")
    return LatencyQuery(model, tuple(predictor.meta.input_shapes[model]), widths, ())


def _model_query(predictor: LatencyPredictor, model: nn.Module, example_input: ModelInputs | None) -> LatencyQuery:
    from toolchain.graph import PruningGraph  # the graph is only needed for a model's widths

    trained = _single_model(predictor)
    if example_input is None:
        if trained is None:
            raise ToolchainError(f"the predictor was fitted on {len(predictor.meta.models)} models: give "
                                 "example_input for the shape to predict at")
        example_input = make_inputs(specs_from_key(predictor.meta.input_shapes[trained]), vocab_size_of(model))
    key = specs_key(specs_of(example_input))
    widths = None
    if predictor.single_architecture:  # the model is read as the widths of its channel groups
        widths = {g.name: g.dense_width for g in PruningGraph(copy.deepcopy(model).eval(), example_input).groups}
    name = trained if predictor.single_architecture and trained else type(model).__name__
    return LatencyQuery.from_model(name, model, key, widths)
