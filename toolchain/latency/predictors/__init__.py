"""Latency predictors behind one interface, registered by name, saved as artifacts.

    lpnet      MLP from one architecture's normalised width vector to ms; differentiable (W-Gates' LPNet)
    layerwise  MLP on per-layer features, summed over layers; transfers to unseen architectures
    macs       linear regression on MACs (baseline)
    lut        per-layer single-op lookup table, summed (NetAdapt / HALP style baseline)

Example:
    >>> predictor = load_predictor("toolchain/latency/artifacts/resnet18-cpu-onnxruntime-lpnet")
    >>> predictor.predict_ms(LatencyQuery.from_model("zoo:resnet18", model, (1, 3, 224, 224), widths))
    12.3
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.inputs import make_inputs, specs_from_key, vocab_size_of
from toolchain.latency.features import LayerSpec, layer_specs, spec_from_dict, total_macs
from toolchain.latency.measure import latency_ms
from toolchain.latency.metrics import accuracy_metrics
from toolchain.latency.predictors.artifact import ArtifactMeta, read_artifact, save_artifact


@dataclass(frozen=True)
class LatencyQuery:
    """One configuration to predict (or, with `measured_ms`, to train on)."""

    model: str
    input_shape: tuple[int, ...]
    widths: dict[str, int] | None
    layers: tuple[LayerSpec, ...]
    measured_ms: float | None = None
    config_key: str = ""

    @property
    def macs(self) -> int:
        return total_macs(list(self.layers))

    @classmethod
    def from_model(
        cls, model_spec: str, model: nn.Module, input_shape, widths: dict[str, int] | None = None
    ) -> LatencyQuery:
        # `input_shape` is an inputs key (`toolchain.inputs.specs_key`): a shape, or typed named inputs.
        layers = layer_specs(model, make_inputs(specs_from_key(input_shape), vocab_size_of(model)))
        return cls(model_spec, tuple(input_shape), widths, tuple(layers))

    @classmethod
    def from_row(cls, row, statistic: str = defaults.STATISTIC) -> LatencyQuery:
        """A training sample from a `toolchain.latency.store.MeasurementRow`, its latency taken by `statistic`."""
        return cls(
            row.model,
            tuple(row.input_shape),
            dict(row.widths),
            tuple(spec_from_dict(d) for d in row.layers),
            latency_ms(row, statistic),
            row.config_key,
        )


class LatencyPredictor:
    """Base class: subclasses set `name`, implement `fit`, `predict_many` and the state round-trip."""

    name: ClassVar[str] = ""
    # True when the predictor only answers for the architectures it was trained on (lpnet).
    single_architecture: ClassVar[bool] = False
    # True when single-op measurements (kind 'layer') are training samples too (layerwise).
    trains_on_single_ops: ClassVar[bool] = False
    # Optimiser steps of neural predictors; `FitConfig.train_steps` overrides it (tests train briefly).
    train_steps: int = 0

    def __init__(self, meta: ArtifactMeta):
        self.meta = meta

    def fit(self, train: list[LatencyQuery]) -> None:
        raise NotImplementedError

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, params: dict, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def predict_ms(self, query: LatencyQuery) -> float:
        """Predicted latency in ms of one configuration."""
        return self.predict_many([query])[0]

    def check_query(self, query: LatencyQuery) -> None:
        """Refuse, clearly, a query this predictor was not trained to answer."""
        if self.single_architecture and query.model not in self.meta.models:
            raise ToolchainError(
                f"predictor {self.name!r} was trained for {', '.join(self.meta.models)}, "
                f"not {query.model!r}; fit one on that model's measurements"
            )
        shape = self.meta.input_shapes.get(query.model)
        if self.single_architecture and shape is not None and list(query.input_shape) != list(shape):
            raise ToolchainError(f"predictor was trained at input shape {tuple(shape)}, not {tuple(query.input_shape)}")

    def check_target(self, target: str | None, backend: str | None, threads: int | None) -> None:
        """Refuse to answer for a target other than the one the training data was measured on."""
        asked = (target or self.meta.target, backend or self.meta.backend, threads or self.meta.threads)
        if asked != (self.meta.target, self.meta.backend, self.meta.threads):
            raise ToolchainError(
                f"predictor artifact was trained for {self.meta.target_label}, not "
                f"{asked[0]}/{asked[1]}/{asked[2]}t; fit one on measurements from that target"
            )

    def save(self, out_dir: str | Path) -> Path:
        return save_artifact(out_dir, self.meta, self.params(), self.tensors())

    def evaluate(self, queries: list[LatencyQuery]) -> dict[str, float]:
        predicted = self.predict_many(queries)
        return accuracy_metrics([q.measured_ms for q in queries], predicted)


_PREDICTORS: dict[str, type[LatencyPredictor]] = {}


def register_predictor(cls: type[LatencyPredictor]) -> type[LatencyPredictor]:
    """Class decorator: make a predictor available by its `name`."""
    _PREDICTORS[cls.name] = cls
    return cls


def list_predictor_kinds() -> list[str]:
    """The registered predictor kinds (lpnet, layerwise, macs, lut); `toolchain.latency.list_predictors()` lists
    fitted artifacts."""
    return sorted(_PREDICTORS)


def predictor_class(name: str) -> type[LatencyPredictor]:
    if name not in _PREDICTORS:
        raise ToolchainError(f"unknown predictor {name!r}; valid: {', '.join(list_predictor_kinds())}")
    return _PREDICTORS[name]


def create_predictor(name: str, meta: ArtifactMeta) -> LatencyPredictor:
    return predictor_class(name)(replace(meta, predictor=name))


def load_predictor(
    path: str | Path, target: str | None = None, backend: str | None = None, threads: int | None = None
) -> LatencyPredictor:
    """Load an artifact written by `toolchain fit`; given a target, refuse an artifact for another one.

    >>> artifacts = Path(toolchain.latency.__file__).parent / "artifacts"          # bundled with the package
    >>> predictor = toolchain.load_predictor(artifacts / "resnet18-cpu-onnxruntime-lpnet", target="cpu")
    >>> predictor.name, predictor.meta.statistic, len(predictor.group_names)       # predicts min latency
    ('lpnet', 'min', 12)
    """
    meta, params, tensors = read_artifact(path)
    predictor = create_predictor(meta.predictor, meta)
    try:
        predictor.load_state(params, tensors)
    except ToolchainError:
        raise
    except Exception as error:  # noqa: BLE001 - edited sizes, missing or mismatched tensors: a damaged artifact
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ToolchainError(f"predictor artifact {path} is damaged ({type(error).__name__}: {first_line}); "
                             "refit it with `toolchain fit`") from error
    predictor.check_target(target, backend, threads)
    return predictor


from toolchain.latency.predictors import baselines, layerwise, lpnet  # noqa: E402,F401,I001  (registration)
