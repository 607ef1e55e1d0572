"""Baselines the learned predictors must beat.

    macs  latency = a * GMACs + b, least squares on the training configurations.
    lut   NetAdapt / HALP style: each compute layer's latency looked up in a table of single-op measurements
          (interpolated between the measured channel counts of its shape), summed over layers, then one
          linear calibration a * sum + b fitted on whole models for everything the table does not hold
          (element-wise ops, framework overhead).

Example:
    >>> lut = create_predictor("lut", meta); lut.set_table(single_op_rows); lut.fit(train_queries)
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.latency.features import COMPUTE_OPS, LayerSpec
from toolchain.latency.predictors import LatencyPredictor, LatencyQuery, register_predictor


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(slope), float(intercept)


@register_predictor
class MacsLinearPredictor(LatencyPredictor):
    name = "macs"

    def __init__(self, meta):
        super().__init__(meta)
        self.ms_per_gmac, self.intercept_ms = 0.0, 0.0

    def fit(self, train: list[LatencyQuery]) -> None:
        gmacs = np.array([q.macs / 1e9 for q in train])
        self.ms_per_gmac, self.intercept_ms = _least_squares(gmacs, np.array([q.measured_ms for q in train]))

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        return [self.ms_per_gmac * q.macs / 1e9 + self.intercept_ms for q in queries]

    def params(self) -> dict:
        return {"ms_per_gmac": self.ms_per_gmac, "intercept_ms": self.intercept_ms}

    def load_state(self, params: dict, tensors) -> None:
        self.ms_per_gmac, self.intercept_ms = params["ms_per_gmac"], params["intercept_ms"]


def _key(signature: tuple) -> str:
    return json.dumps(list(signature))


@register_predictor
class LookupTablePredictor(LatencyPredictor):
    name = "lut"

    def __init__(self, meta):
        super().__init__(meta)
        # signature -> [[in_channels, out_channels, ms], ...] from single-op measurements
        self.table: dict[str, list[list[float]]] = {}
        self._interpolators: dict = {}
        self.scale, self.intercept_ms = 1.0, 0.0

    def set_table(self, single_ops: list[tuple[LayerSpec, float]]) -> None:
        """Fill the table from (layer, measured ms) pairs of single-op measurements."""
        table = defaultdict(list)
        for layer, ms in single_ops:
            table[_key(layer.signature())].append([layer.in_channels, layer.out_channels, ms])
        self.table = dict(table)
        self._interpolators = {}

    def _interpolator(self, signature_key: str):
        """ms as a function of (in_channels, out_channels) for one layer shape, from its measured points.

        Linear inside the measured points (1-D when only one channel count varies, e.g. depthwise or the
        stem), nearest measured point outside them.
        """
        if signature_key not in self._interpolators:
            points = np.asarray(self.table[signature_key], dtype=np.float64)
            channels, ms = points[:, :2], points[:, 2]
            varying = [axis for axis in (0, 1) if len(np.unique(channels[:, axis])) > 1]
            if len(varying) == 2 and not np.all(channels[:, 0] == channels[:, 1]):
                # imported here: scipy costs every CLI call 0.9 s at import
                from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

                linear = LinearNDInterpolator(channels, ms)
                nearest = NearestNDInterpolator(channels, ms)

                def interpolate(cin, cout):
                    value = linear(cin, cout)
                    return float(nearest(cin, cout) if np.isnan(value) else value)
            else:
                axis = varying[0] if varying else 1
                order = np.argsort(channels[:, axis])
                xs, ys = channels[order, axis], ms[order]

                def interpolate(cin, cout):
                    return float(np.interp((cin, cout)[axis], xs, ys))

            self._interpolators[signature_key] = interpolate
        return self._interpolators[signature_key]

    def _layer_ms(self, layer: LayerSpec) -> float:
        key = _key(layer.signature())
        if key not in self.table:
            raise ToolchainError(
                f"lookup table has no single-op measurements for a {layer.op} layer of shape "
                f"{layer.signature()}; profile this model with --layer-levels > 0"
            )
        return self._interpolator(key)(layer.in_channels, layer.out_channels)

    def table_sum_ms(self, query: LatencyQuery) -> float:
        return sum(self._layer_ms(layer) for layer in query.layers if layer.op in COMPUTE_OPS)

    def fit(self, train: list[LatencyQuery]) -> None:
        if not self.table:
            raise ToolchainError(
                "the lookup-table baseline needs single-op measurements; profile with --layer-levels > 0"
            )
        sums = np.array([self.table_sum_ms(q) for q in train])
        self.scale, self.intercept_ms = _least_squares(sums, np.array([q.measured_ms for q in train]))

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        return [self.scale * self.table_sum_ms(q) + self.intercept_ms for q in queries]

    def params(self) -> dict:
        return {"table": self.table, "scale": self.scale, "intercept_ms": self.intercept_ms}

    def load_state(self, params: dict, tensors) -> None:
        self.table, self.scale, self.intercept_ms = params["table"], params["scale"], params["intercept_ms"]
        self._interpolators = {}
