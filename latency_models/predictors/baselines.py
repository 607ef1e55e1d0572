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
from scipy.interpolate import RegularGridInterpolator

from latency_models.features import COMPUTE_OPS, LayerSpec
from latency_models.predictors import LatencyPredictor, LatencyQuery, register_predictor
from toolchain.errors import ToolchainError


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
        self.scale, self.intercept_ms = 1.0, 0.0

    def set_table(self, single_ops: list[tuple[LayerSpec, float]]) -> None:
        """Fill the table from (layer, measured ms) pairs of single-op measurements."""
        table = defaultdict(list)
        for layer, ms in single_ops:
            table[_key(layer.signature())].append([layer.in_channels, layer.out_channels, ms])
        self.table = dict(table)

    def _layer_ms(self, layer: LayerSpec) -> float:
        points = self.table.get(_key(layer.signature()))
        if points is None:
            raise ToolchainError(
                f"lookup table has no single-op measurements for a {layer.op} layer of shape "
                f"{layer.signature()}; profile this model with --layer-levels > 0"
            )
        array = np.asarray(points)
        cin, cout, ms = array[:, 0], array[:, 1], array[:, 2]
        if np.all(cin == cout) or len(np.unique(cin)) == 1 or len(np.unique(cout)) == 1:
            axis = cout if len(np.unique(cout)) > 1 else cin
            query = layer.out_channels if axis is cout else layer.in_channels
            order = np.argsort(axis)
            return float(np.interp(query, axis[order], ms[order]))
        cin_axis, cout_axis = np.unique(cin), np.unique(cout)
        grid = np.full((len(cin_axis), len(cout_axis)), np.nan)
        grid[np.searchsorted(cin_axis, cin), np.searchsorted(cout_axis, cout)] = ms
        if np.isnan(grid).any():
            raise ToolchainError(f"lookup table for {layer.signature()} is not a full grid; profile it again")
        interpolate = RegularGridInterpolator((cin_axis, cout_axis), grid)
        query = [
            np.clip(layer.in_channels, cin_axis[0], cin_axis[-1]),
            np.clip(layer.out_channels, cout_axis[0], cout_axis[-1]),
        ]
        return float(interpolate([query])[0])

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
