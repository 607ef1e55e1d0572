"""What the report reads, one frozen record per input kind, and the field names it keys on (in one place).

Every record keeps `source` (the file it came from) and `fingerprint_id` (the machine its numbers belong to,
or None when the file records none), so every number in the report can say where it came from. Values that a
file does not contain stay None and are shown as missing, never filled in.

Example:
    >>> point = sweep_point({"budget_ms": "2.0", "measured_latency_ms": "1.9", "allocator": "knapsack"}, "s.csv")
    >>> point.budget_ms, point.measured_latency_ms, point.hit_budget, point.accuracy
    (2.0, 1.9, True, None)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from toolchain.manifest import BUDGET_BAND_LOW, Accuracy, Manifest

# Sweep rows (toolchain/sweep.py, benchmarks/budget_sweep.py): logical field -> accepted column names, first
# match wins. A budget is hit when the measured latency lies in [BUDGET_BAND_LOW, 1] x budget.
SWEEP_COLUMNS: dict[str, tuple[str, ...]] = {
    "budget_ms": ("budget_ms", "latency_budget_ms", "budget"),
    "predicted_latency_ms": ("predicted_latency_ms", "predicted_ms"),
    "measured_latency_ms": ("measured_latency_ms", "measured_ms"),
    "dense_latency_ms": ("dense_latency_ms",),
    "macs": ("macs",),
    "params": ("params",),
    "accuracy_before_recovery": ("accuracy_before_recovery", "accuracy_before", "accuracy_pruned"),
    # after recovery: fine-tuned where the sweep fine-tuned, else after BatchNorm re-calibration
    "accuracy": ("accuracy_finetuned", "accuracy_after_recovery", "accuracy_after_bn_recalibration", "accuracy_after",
                 "accuracy"),
    "criterion": ("criterion",),
    "allocator": ("allocator",),
    "model": ("model",),
    "target": ("target", "device"),
}
# Stage wall times: columns named `<stage>_wall_s` or `wall_s_<stage>`, or a dict under one of these keys.
SWEEP_STAGE_PATTERN = re.compile(r"^(?:(?P<a>.+)_wall_s|wall_s_(?P<b>.+)|(?P<c>[a-z_]+)_s)$")
SWEEP_STAGE_DICT_KEYS = ("stage_wall_s", "wall_s", "stage_times_s")

# Fingerprint facts that change between runs on the same machine; left out of the identity hash.
VOLATILE_FACTS = ("load_average", "load_average_1_5_15", "load_average_after_1_5_15", "gpu_temperature_c",
                  "gpu_power_w", "gpu_clocks_mhz", "sm_clock_mhz", "mem_clock_mhz")


def number(value) -> float | None:
    """A finite float from a JSON or CSV value; None for missing, empty, 'None', 'nan' or non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def text(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value if value and value.lower() not in ("none", "nan", "null") else None


def fingerprint_key(facts: dict, given_id: str | None = None) -> str:
    """The id a file gives its fingerprint, or a stable 16-hex-digit hash of the non-volatile facts."""
    if given_id:
        return str(given_id)
    stable = {k: v for k, v in facts.items() if k not in VOLATILE_FACTS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fingerprint:
    """Where numbers were taken: the facts as the file records them, and what kind of file recorded them."""

    key: str
    facts: dict
    recorded_by: str  # "kernel benchmark", "predictor benchmark", "measurement database", ...


@dataclass(frozen=True)
class Method:
    """How a file's latencies were measured; None where the file does not record it."""

    warmup_runs: int | None = None
    timed_runs: int | None = None
    statistic: str | None = None
    clock: str | None = None
    noise_floor: str | None = None


@dataclass(frozen=True)
class ManifestRecord:
    """A deploy bundle or pruned folder (`manifest.json`), read through the typed manifest (which also reads
    the layouts written before it had a version)."""

    source: str
    manifest: Manifest
    fingerprint_id: str | None

    @property
    def model(self) -> str | None:
        return text(self.manifest.model)

    @property
    def target(self) -> str | None:
        return text(self.manifest.device_name)

    @property
    def measured_latency_ms(self) -> float | None:
        measured = self.manifest.latency.measured
        return number(measured.ms) if measured else None

    @property
    def predicted_latency_ms(self) -> float | None:
        predicted = self.manifest.latency.predicted
        return number(predicted.ms) if predicted else None

    @property
    def prediction_source(self) -> str | None:
        predicted = self.manifest.latency.predicted
        return text(predicted.source) if predicted else None

    @property
    def measurement_source(self) -> str | None:
        """How the latency was measured (with its statistic and clock where recorded), or why it was not."""
        latency = self.manifest.latency
        if latency.measured is None:
            return text(latency.not_measured)
        how = ", ".join(f"{k} {v}" for k, v in (("statistic", latency.measured.statistic),
                                                 ("clock", latency.measured.clock)) if v)
        return f"{latency.measured.source} ({how})" if how else latency.measured.source

    @property
    def widths(self) -> tuple[dict, dict] | None:
        """(kept, dense) widths per channel group, or None when the manifest has no widths."""
        kept, dense = self.manifest.pruning.per_group_widths, self.manifest.pruning.dense_group_widths
        return (kept, dense) if isinstance(kept, dict) and isinstance(dense, dict) and kept else None


@dataclass(frozen=True)
class SweepPoint:
    """One point of a latency-budget sweep."""

    source: str
    fingerprint_id: str | None
    budget_ms: float | None
    predicted_latency_ms: float | None
    measured_latency_ms: float | None
    dense_latency_ms: float | None
    macs: float | None
    params: float | None
    accuracy_before_recovery: float | None
    accuracy: float | None
    criterion: str | None
    allocator: str | None
    model: str | None
    target: str | None
    stage_wall_s: dict = field(default_factory=dict)

    @property
    def hit_budget(self) -> bool | None:
        """Measured latency in [BUDGET_BAND_LOW, 1] x budget (the sweep's hit); None when either is missing."""
        if self.budget_ms is None or self.measured_latency_ms is None:
            return None
        return BUDGET_BAND_LOW * self.budget_ms <= self.measured_latency_ms <= self.budget_ms


def sweep_point(row: dict, source: str, fingerprint_id: str | None = None) -> SweepPoint:
    """A sweep point from one row (CSV strings or JSON values), through `SWEEP_COLUMNS`."""

    def pick(name: str):
        return next((row[c] for c in SWEEP_COLUMNS[name] if c in row and row[c] not in (None, "")), None)

    stages = {}
    for key in SWEEP_STAGE_DICT_KEYS:
        if isinstance(row.get(key), dict):
            stages.update({str(k): v for k, v in row[key].items() if number(v) is not None})
    for column, value in row.items():
        match = SWEEP_STAGE_PATTERN.match(str(column))
        if match and number(value) is not None:
            stages[match["a"] or match["b"] or match["c"]] = number(value)
    numeric = {name: number(pick(name)) for name in SWEEP_COLUMNS if name not in ("criterion", "allocator",
                                                                                  "model", "target")}
    return SweepPoint(source=source, fingerprint_id=fingerprint_id, **numeric, criterion=text(pick("criterion")),
                      allocator=text(pick("allocator")), model=text(pick("model")), target=text(pick("target")),
                      stage_wall_s={k: number(v) for k, v in stages.items()})


def manifest_point(record: ManifestRecord) -> SweepPoint | None:
    """The sweep point a manifest built for a latency budget stands for (None: not built for a budget)."""
    m = record.manifest
    if m.budget is None or number(m.budget.budget_ms) is None:
        return None
    accuracy = m.accuracy or Accuracy()
    return SweepPoint(
        source=record.source, fingerprint_id=record.fingerprint_id, budget_ms=number(m.budget.budget_ms),
        predicted_latency_ms=record.predicted_latency_ms, measured_latency_ms=record.measured_latency_ms,
        dense_latency_ms=number(m.latency.dense.ms) if m.latency.dense else None,
        macs=number(m.pruning.macs), params=number(m.pruning.params),
        accuracy_before_recovery=number(accuracy.before_recovery), accuracy=number(accuracy.pruned),
        criterion=text(m.budget.criterion), allocator=text(m.budget.allocator), model=record.model,
        target=text(m.target), stage_wall_s={k: number(v) for k, v in (m.budget.wall_s or {}).items()
                                             if number(v) is not None})


def is_sweep_row(row) -> bool:
    """A row a sweep writes: it names a budget and some latency or accuracy."""
    if not isinstance(row, dict):
        return False
    has = {name for name, columns in SWEEP_COLUMNS.items() if any(c in row for c in columns)}
    return "budget_ms" in has and bool(has & {"measured_latency_ms", "predicted_latency_ms", "accuracy"})


@dataclass(frozen=True)
class PredictorScore:
    """One predictor scored against measurements (held-out configurations or an unseen architecture)."""

    source: str
    fingerprint_id: str | None
    model: str
    predictor: str
    scope: str
    n: int | None
    mape_pct: float | None
    within_5pct: float | None
    within_10pct: float | None
    spearman: float | None
    measured_ms: tuple[float, ...] = ()
    predicted_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class PredictorBenchmark:
    """A `benchmarks/latency_predictor.py` result file."""

    source: str
    fingerprint_id: str | None
    target: str | None
    method: Method
    scores: tuple[PredictorScore, ...]
    noise_floor: dict
    plot_png: str | None  # the benchmark's own scatter plot beside the JSON, when present


@dataclass(frozen=True)
class KernelBenchmark:
    """A `benchmarks/sparse_kernels.py` result file: rows of layer, device, pattern, sparsity, backend, timings."""

    source: str
    fingerprint_id: str | None
    method: Method
    rows: tuple[dict, ...]
    plot_png: str | None


@dataclass(frozen=True)
class ModelConfig:
    """One measured width configuration of a model in the measurement database."""

    model: str
    widths: dict
    layers: tuple[dict, ...]
    median_ms: float
    sample_tag: str
    target: str
    fingerprint_id: str


@dataclass(frozen=True)
class Database:
    """A measurement database (SQLite): what it holds, how it measured, and its per-layer measurements."""

    source: str
    summary: tuple[tuple, ...]  # (model, target, backend, threads, kind, count)
    method: Method
    fingerprint_ids: tuple[str, ...]
    configs: tuple[ModelConfig, ...]
    single_op_ms: dict  # layer-spec key -> median ms of the op measured alone
