"""The manifest of a pruned folder or deploy bundle (`manifest.json`), typed, versioned, one to/from JSON.

Writers (ratio and budget pruning, the deploy pipeline, bundles) build it; readers (the CLI summary, sweep
rows, the report, the bundle README) read it through `Manifest.from_json`, which is also the one place that
knows the layouts written before the manifest had a version. The JSON keeps the field names it always had,
so folders written earlier read as before; keys this module does not know (another writer's) are kept in
`extra` and written back, so a round trip loses nothing.

A latency says what it is: a value, for a measurement the statistic of the timed runs and the clock, and its
source, "measured on <target label>" or "predicted by <predictor>".

    >>> m = Manifest.from_json({"model": "zoo:demo", "params": 420, "dense_params": 1500,
    ...                         "measured_latency_ms": 0.21, "latency_target": {"label": "cpu/onnxruntime/1t",
    ...                                                                         "statistic": "min", "clock": "wall"}})
    >>> m.latency.measured.source, m.latency.measured.statistic
    ('measured by the budget loop on cpu/onnxruntime/1t', 'min')
    >>> m.version, Manifest.from_json(m.to_json()).latency == m.latency
    (1, True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from toolchain.errors import ToolchainError

# 1: the untyped layouts written before this module (no `version` field); 2: typed, latency with statistic/clock.
MANIFEST_VERSION = 2
# A budget is met when the measured latency lies in [BUDGET_BAND_LOW, 1] x budget: under it, and not so far
# under that latency (and so accuracy) was left unused. The budget loop, sweeps and the report share it.
BUDGET_BAND_LOW = 0.90


class ManifestError(ToolchainError):
    """A manifest this toolchain cannot read (not a JSON object, or written by a newer version)."""


def _put(doc: dict, key: str, value, keep_none: bool = False) -> None:
    """Set `doc[key]` unless `value` is None (a fact not recorded stays absent, never written as null)."""
    if value is not None or keep_none:
        doc[key] = list(value) if isinstance(value, tuple) else value


def _section(doc: dict, key: str) -> dict:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _first(*values):
    return next((v for v in values if v is not None), None)


def _tuple(value) -> tuple | None:
    return tuple(value) if isinstance(value, (list, tuple)) else None


@dataclass(frozen=True)
class Latency:
    """One latency and what it is.

    >>> Latency.measured_on("cpu/onnxruntime/1t", 0.21, "min", "thread_cpu").source
    'measured on cpu/onnxruntime/1t'
    >>> Latency.predicted_by("lpnet (runs/predictors/demo)", 0.2).is_measured
    False
    """

    ms: float | None
    source: str  # "measured on <target label>..." or "predicted by <predictor>..."
    statistic: str | None = None  # of the timed runs, "min", "median" or "p90" (measurements only)
    clock: str | None = None  # "wall" or "thread_cpu" (measurements only)
    runs: dict | None = None  # min_ms, median_ms, p90_ms and number of the same timed runs, where recorded

    @classmethod
    def measured_on(cls, label: str, ms: float, statistic: str | None, clock: str | None, how: str = "",
                    runs: dict | None = None) -> Latency:
        return cls(ms, f"measured on {label}{how}", statistic, clock, runs)

    @classmethod
    def predicted_by(cls, predictor: str, ms: float | None, how: str = "") -> Latency:
        return cls(ms, f"predicted by {predictor}{how}")

    @property
    def is_measured(self) -> bool:
        return self.source.startswith("measured")

    def describe(self) -> str:
        """The value with what it is, e.g. "0.319 ms (min of 263 runs, thread-CPU)".

        >>> Latency(0.319, "measured on cpu", "min", "thread_cpu", {"runs": 263}).describe()
        '0.319 ms (min of 263 runs, thread-CPU)'
        >>> Latency.predicted_by("lpnet", 0.3).describe()
        '0.300 ms (predicted)'
        """
        if not self.is_measured:
            return f"{self.ms:.3f} ms (predicted)"
        clock = {"thread_cpu": "thread-CPU"}.get(self.clock, self.clock or "clock not recorded")
        runs = f" of {self.runs['runs']} runs" if self.runs and self.runs.get("runs") else ""
        return f"{self.ms:.3f} ms ({self.statistic or 'statistic not recorded'}{runs}, {clock})"

    def spread(self) -> str:
        """The other statistics of the same runs, e.g. "median 0.331, p90 0.352 ms of the same runs"; "" if unknown."""
        if not self.runs:
            return ""
        others = [f"{name} {self.runs[f'{name}_ms']:.3f}" for name in ("min", "median", "p90")
                  if name != self.statistic and self.runs.get(f"{name}_ms") is not None]
        return f"{', '.join(others)} ms of the same runs" if others else ""


_STATISTIC_IN_TEXT = re.compile(r"\b(min|median|p90) of \d+ runs")


@dataclass(frozen=True)
class Latencies:
    """The latencies of the pruned (and dense) model and how they were obtained."""

    measured: Latency | None = None  # the pruned model, timed on the target
    predicted: Latency | None = None  # the pruned model, predicted (latency model or roofline prior)
    dense: Latency | None = None  # the dense model, timed like `measured`
    not_measured: str | None = None  # why `measured` is missing
    unreachable: str | None = None  # the board that could not be reached, and why
    policy: dict | None = None  # how the budget loop timed: label, clock, statistic, timed_runs, min_timed_ms
    fingerprint: dict | None = None  # the machine the deploy step timed on

    def to_json(self) -> dict:
        doc: dict = {}
        _put(doc, "dense_latency_ms", self.dense.ms if self.dense else None)
        _put(doc, "predicted_latency_ms", self.predicted.ms if self.predicted else None)
        _put(doc, "measured_latency_ms", self.measured.ms if self.measured else None)
        section: dict = {}
        if self.measured or self.predicted or self.not_measured:
            section["measured_ms"] = self.measured.ms if self.measured else None
        if self.measured:
            section.update(statistic=self.measured.statistic, clock=self.measured.clock, source=self.measured.source)
        _put(section, "measured_note", self.not_measured)
        if self.predicted:
            section.update(predicted_ms=self.predicted.ms, prediction_source=self.predicted.source)
        _put(doc, "latency", section or None)
        runs = {"measured": self.measured.runs if self.measured else None,
                "dense": self.dense.runs if self.dense else None}
        _put(doc, "latency_runs", runs if any(runs.values()) else None)  # min/median/p90 of the same runs
        _put(doc, "latency_target", self.policy)
        _put(doc, "latency_fingerprint", self.fingerprint)
        _put(doc, "latency_unreachable", self.unreachable)
        return doc

    @classmethod
    def _from_json(cls, doc: dict) -> Latencies:
        """Also reads the older layouts: the source in `latency_source`, the statistic and clock only in the
        budget loop's `latency_target` or in the source's wording, the value only in the `latency` section."""
        section, policy = _section(doc, "latency"), doc.get("latency_target")
        policy = policy if isinstance(policy, dict) else None
        measured = dense = predicted = None
        measured_ms = _first(doc.get("measured_latency_ms"), section.get("measured_ms"))
        source = section.get("source") or doc.get("latency_source") or (
            f"measured by the budget loop on {policy.get('label')}" if policy else "measured (source not recorded)")
        found = _STATISTIC_IN_TEXT.search(f"{source} {doc.get('latency_source') or ''}")
        # The budget's statistic (a budget run) before the target's measurement policy: the budget loop reports
        # every latency by the statistic the budget is met on.
        statistic = (section.get("statistic") or doc.get("budget_statistic") or (policy or {}).get("statistic")
                     or (found[1] if found else None))
        clock = section.get("clock") or (policy or {}).get("clock")
        runs = _section(doc, "latency_runs")
        if measured_ms is not None:
            measured = Latency(measured_ms, source, statistic, clock, runs.get("measured"))
        if doc.get("dense_latency_ms") is not None:
            dense = Latency(doc["dense_latency_ms"], source, statistic, clock, runs.get("dense"))
        predicted_ms = _first(doc.get("predicted_latency_ms"), section.get("predicted_ms"))
        if predicted_ms is not None or section.get("prediction_source"):
            predictor = _section(doc, "predictor")
            named = f"predicted by {predictor.get('name')}" + (f" ({predictor['artifact']})"
                                                                if predictor.get("artifact") else "")
            predicted = Latency(predicted_ms, section.get("prediction_source")
                                or (named if predictor else "predicted (source not recorded)"))
        return cls(measured, predicted, dense, section.get("measured_note"), doc.get("latency_unreachable"), policy,
                   doc.get("latency_fingerprint") if isinstance(doc.get("latency_fingerprint"), dict) else None)


@dataclass(frozen=True)
class Pruning:
    """What was removed: sizes before and after, and the widths per channel group."""

    dense_params: int | None = None
    params: int | None = None
    dense_macs: int | None = None
    macs: int | None = None
    ratio: float | None = None  # the uniform ratio; None when the widths came from a latency budget
    round_to: int | None = None
    protected_layers: tuple[str, ...] | None = None
    per_group_widths: dict | None = None  # group -> kept width
    dense_group_widths: dict | None = None
    frozen_groups: dict | None = None  # group -> why it is never pruned


@dataclass(frozen=True)
class Verification:
    """How closely each form of the pruned model matches the reference it was checked against."""

    shrink_relative_error: float | None = None  # shrunk vs masked dense model (PyTorch), outputs and inside
    shrink_module_outputs: int | None = None  # module outputs (of unchanged shape) compared inside the model
    onnx_max_rel_err: float | None = None  # ONNX (onnxruntime) vs the pruned PyTorch model
    onnx_outputs_vary: bool | None = None  # False: they changed by under 1e-6 of their scale over the inputs
    onnx_opset: int | None = None


@dataclass(frozen=True)
class Accuracy:
    """Accuracies on the test split of `data`; `pruned` is after recovery (and fine-tuning, if any)."""

    data: str | None = None
    dense: float | None = None
    pruned: float | None = None
    before_recovery: float | None = None
    after_bn_recalibration: float | None = None
    finetune_steps: int | None = None  # distillation steps taken
    # What recovery did: ran, mode (seconds/steps/off), seconds, thread_cpu_seconds, seconds_limit, steps,
    # stop_reason, dense_calib_accuracy, calib_accuracy_before/after (toolchain.recover.recover).
    recovery: dict | None = None

    def to_json(self) -> dict:
        doc: dict = {}
        for key, value in (("accuracy_data", self.data), ("dense_accuracy", self.dense), ("accuracy", self.pruned),
                           ("accuracy_before_recovery", self.before_recovery),
                           ("accuracy_after_bn_recalibration", self.after_bn_recalibration),
                           ("finetune_steps", self.finetune_steps), ("recovery", self.recovery)):
            _put(doc, key, value)
        return doc


# How a try's widths were chosen when not by the allocator on the predictor alone (budget_trial.SEARCHES).
_ORIGINS = ("bracketed", "refined", "neighbour", "corrected")


@dataclass(frozen=True)
class Iteration:
    """One try of the budget loop: the (measured-scale) target it aimed at, its prediction and measurement."""

    target_predicted_ms: float | None = None
    predicted_ms: float | None = None
    measured_ms: float | None = None
    calibration_check: dict | None = None
    origin: str | None = None  # one of _ORIGINS; None: the allocator chose the widths
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        doc: dict = {}
        for key in ("target_predicted_ms", "predicted_ms", "measured_ms", "calibration_check"):
            _put(doc, key, getattr(self, key))
        if self.origin:
            doc[self.origin] = True
        return {**doc, **self.extra}

    @classmethod
    def _from_json(cls, doc: dict) -> Iteration:
        origin = next((name for name in _ORIGINS if doc.get(name) is True), None)
        known = {"target_predicted_ms", "predicted_ms", "measured_ms", "calibration_check", origin}
        return cls(doc.get("target_predicted_ms"), doc.get("predicted_ms"), doc.get("measured_ms"),
                   doc.get("calibration_check"), origin, {k: v for k, v in doc.items() if k not in known})


@dataclass(frozen=True)
class Budget:
    """A budget run: the budget, the outcome, how the widths were searched and with which latency model."""

    budget_ms: float
    budget_ratio: float | None = None  # of the dense model's measured latency; None when given in ms
    budget_met: bool | None = None
    budget_statistic: str | None = None  # the statistic of the timed runs the budget was met on
    criterion: str | None = None
    criterion_note: str | None = None  # why the criterion differs from the one asked for (no data: data-free)
    allocator: str | None = None
    per_layer_widths: dict | None = None
    iterations: tuple[Iteration, ...] | None = None
    saliency: dict | None = None  # the criterion's cost report
    predictor: dict | None = None  # name, artifact, heldout_error
    wall_s: dict | None = None  # stage -> seconds
    # BudgetConfig.recovered_selection_steps: which search's model was kept, and both candidates
    recovered_selection: dict | None = None

    def within_band(self, measured_ms: float, lower_ratio: float = BUDGET_BAND_LOW) -> bool:
        """Whether `measured_ms` lies in [lower_ratio, 1] x budget.

        >>> Budget(2.0).within_band(1.9), Budget(2.0).within_band(1.7)
        (True, False)
        """
        return lower_ratio * self.budget_ms <= measured_ms <= self.budget_ms

    def to_json(self) -> dict:
        doc = {"budget_ms": self.budget_ms, "budget_ratio": self.budget_ratio}
        for key in ("budget_met", "budget_statistic", "criterion", "criterion_note", "allocator", "per_layer_widths",
                    "saliency", "predictor", "wall_s", "recovered_selection"):
            _put(doc, key, getattr(self, key))
        if self.iterations is not None:
            doc["iterations"] = [it.to_json() for it in self.iterations]
        return doc


@dataclass(frozen=True)
class Deployment:
    """What a deploy bundle adds for its device: the device, library versions, TVM library, TensorRT files."""

    device: dict  # name, description, cpu_triple, cuda_sm, source (the device table's entry)
    versions: dict | None = None  # package -> version (None: not installed)
    tvm: dict | None = None  # library and its check (host) or its ELF facts (cross-built)
    tensorrt: dict | None = None  # version on the device, precision, fallback ops, calibration, 2:4 sparsity

    @property
    def device_name(self) -> str | None:
        return self.device.get("name")


# Said after the ONNX error when the outputs did not vary with the input (`Verification.onnx_outputs_vary` False).
NEAR_CONSTANT_NOTE = ("; the outputs barely changed with the input (under 1e-6 of their scale: weights never "
                      "trained?), so this compared near-constants")

# JSON keys of the flat sections (Python field -> JSON key where they differ).
_PRUNING_KEYS = {f.name: f.name for f in fields(Pruning)}
_VERIFICATION_KEYS = {"shrink_relative_error": "verified_relative_error",
                      "shrink_module_outputs": "verified_module_outputs", "onnx_max_rel_err": "onnx_max_rel_err",
                      "onnx_outputs_vary": "onnx_outputs_vary_with_input", "onnx_opset": "onnx_opset"}
_ACCURACY_KEYS = {"data": "accuracy_data", "dense": "dense_accuracy", "pruned": "accuracy",
                  "before_recovery": "accuracy_before_recovery",
                  "after_bn_recalibration": "accuracy_after_bn_recalibration", "finetune_steps": "finetune_steps",
                  "recovery": "recovery"}
_BUDGET_KEYS = [f.name for f in fields(Budget)]
_DEPLOYMENT_KEYS = [f.name for f in fields(Deployment)]
# latency_source: version 1 only; latency_runs: min/median/p90 and count of the runs behind measured and dense
_LATENCY_KEYS = ["dense_latency_ms", "predicted_latency_ms", "measured_latency_ms", "latency", "latency_target",
                 "latency_fingerprint", "latency_unreachable", "latency_source", "latency_runs"]
_TOP_KEYS = ["version", "model", "target", "input_shape", "inputs", "toolchain_version", "created_at"]
# Fields that hold a JSON object or list: anything else is a malformed manifest (refused in one line).
_OBJECT_KEYS = ("per_group_widths", "dense_group_widths", "frozen_groups", "per_layer_widths", "saliency", "predictor",
                "wall_s", "device", "versions", "tvm", "tensorrt", "latency_target", "latency_fingerprint", "recovery",
                "latency_runs")
_LIST_KEYS = ("input_shape", "inputs", "protected_layers", "iterations")
_KNOWN = {*_TOP_KEYS, *_PRUNING_KEYS.values(), *_VERIFICATION_KEYS.values(), *_ACCURACY_KEYS.values(),
          *_BUDGET_KEYS, *_DEPLOYMENT_KEYS, *_LATENCY_KEYS}


@dataclass(frozen=True)
class Manifest:
    """Everything a pruned folder or bundle records about how it was made.

    >>> m = Manifest(model="zoo:demo", pruning=Pruning(params=420, dense_params=1500))
    >>> doc = m.to_json()
    >>> doc["version"], doc["params"], Manifest.from_json(doc) == m
    (2, 420, True)
    """

    model: str | None = None
    target: str | None = None
    input_shape: tuple[int, ...] | None = None  # the first input's, for readers of one-tensor models
    inputs: tuple[dict, ...] | None = None  # named, typed example inputs (toolchain.inputs.specs_to_json)
    pruning: Pruning = field(default_factory=Pruning)
    verification: Verification = field(default_factory=Verification)
    accuracy: Accuracy | None = None
    budget: Budget | None = None
    latency: Latencies = field(default_factory=Latencies)
    deployment: Deployment | None = None
    toolchain_version: str | None = None
    created_at: str | None = None
    extra: dict = field(default_factory=dict)  # keys of other writers, kept as they were
    version: int = MANIFEST_VERSION  # the version the JSON was read from (1: written before versions existed)

    @property
    def describes_pruned_model(self) -> bool:
        return self.pruning.per_group_widths is not None

    def to_json(self) -> dict:
        """The JSON object of `manifest.json`, in the current layout (`version` = MANIFEST_VERSION)."""
        doc: dict = {"version": MANIFEST_VERSION}
        for key in ("model", "target", "input_shape", "inputs"):
            _put(doc, key, getattr(self, key))
        pruned = self.describes_pruned_model
        for name, key in _PRUNING_KEYS.items():  # a budget run records its ratio as null: keep it
            _put(doc, key, getattr(self.pruning, name), keep_none=pruned and key == "ratio")
        for name, key in _VERIFICATION_KEYS.items():
            _put(doc, key, getattr(self.verification, name), keep_none=pruned and name == "shrink_relative_error")
        _put(doc, "toolchain_version", self.toolchain_version)
        _put(doc, "created_at", self.created_at)
        doc.update(self.accuracy.to_json() if self.accuracy else {})
        doc.update(self.budget.to_json() if self.budget else {})
        doc.update(self.latency.to_json())
        if self.deployment is not None:
            for key in _DEPLOYMENT_KEYS:
                _put(doc, key, getattr(self.deployment, key))
        return {**doc, **{k: v for k, v in self.extra.items() if k not in doc}}

    @classmethod
    def from_json(cls, doc) -> Manifest:
        """Read a manifest of this or an older version; a newer one is refused (ManifestError, one line)."""
        if not isinstance(doc, dict):
            raise ManifestError(f"a manifest is a JSON object, not {type(doc).__name__}")
        version = doc.get("version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise ManifestError(f"manifest version {version} is newer than this toolchain reads "
                                f"(up to {MANIFEST_VERSION}); upgrade the toolchain to read it")
        malformed = [k for k in _OBJECT_KEYS if doc.get(k) is not None and not isinstance(doc[k], dict)]
        malformed += [k for k in _LIST_KEYS if doc.get(k) is not None and not isinstance(doc[k], list)]
        if malformed or not all(isinstance(it, dict) for it in doc.get("iterations") or ()):
            raise ManifestError(f"malformed manifest: {(malformed or ['iterations'])[0]} has the wrong JSON type")
        accuracy = {name: doc.get(key) for name, key in _ACCURACY_KEYS.items()}
        budget = None
        if doc.get("budget_ms") is not None:
            iterations = doc.get("iterations")
            budget = Budget(**{k: doc.get(k) for k in _BUDGET_KEYS if k != "iterations"},
                            iterations=tuple(Iteration._from_json(it) for it in iterations)
                            if isinstance(iterations, list) else None)
        deployment = None
        if isinstance(doc.get("device"), dict):
            deployment = Deployment(**{k: doc.get(k) for k in _DEPLOYMENT_KEYS})
        return cls(
            model=doc.get("model"), target=doc.get("target"), input_shape=_tuple(doc.get("input_shape")),
            inputs=_tuple(doc.get("inputs")),
            pruning=Pruning(**{name: doc.get(key) for name, key in _PRUNING_KEYS.items()
                               if name != "protected_layers"},
                            protected_layers=_tuple(doc.get("protected_layers"))),
            verification=Verification(**{name: doc.get(key) for name, key in _VERIFICATION_KEYS.items()}),
            accuracy=Accuracy(**accuracy) if any(v is not None for v in accuracy.values()) else None,
            budget=budget, latency=Latencies._from_json(doc), deployment=deployment,
            toolchain_version=doc.get("toolchain_version"), created_at=doc.get("created_at"),
            extra={k: v for k, v in doc.items() if k not in _KNOWN}, version=version)

    @property
    def device_name(self) -> str | None:
        """The device the bundle was built for, else the target the folder was pruned for."""
        return (self.deployment.device_name if self.deployment else None) or self.target


def read_manifest(path: str | Path) -> Manifest:
    """`Manifest.from_json` of a file; an unreadable file is a one-line ToolchainError."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolchainError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    try:
        return Manifest.from_json(doc)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def summary_lines(manifest: Manifest) -> list[str]:
    """What the CLI prints about a folder it wrote (after its `wrote <out>/` line)."""
    p, lines = manifest.pruning, []
    lines.append(f"  params {p.dense_params:,} -> {p.params:,} ({p.params / p.dense_params:.1%}); "
                 f"MACs {p.dense_macs:,} -> {p.macs:,} ({p.macs / p.dense_macs:.1%})")
    accuracy = manifest.accuracy
    if accuracy is not None and accuracy.pruned is not None:
        lines.append(f"  accuracy (measured on {accuracy.data} test split): "
                     f"{accuracy.dense:.2%} dense -> {accuracy.pruned:.2%} pruned")
        lines += _recovery_lines(accuracy)
    shrink = manifest.verification
    if shrink.shrink_relative_error is not None:
        inside = "" if shrink.shrink_module_outputs is None else f" and {shrink.shrink_module_outputs} module outputs"
        lines.append(f"  shrink verified against the masked dense model: max relative error "
                     f"{shrink.shrink_relative_error:.1e} over the outputs{inside}")
    checked = manifest.verification
    constant = NEAR_CONSTANT_NOTE if checked.onnx_outputs_vary is False else ""
    lines.append(f"  ONNX verified against PyTorch: max relative error {checked.onnx_max_rel_err:.1e}{constant}")
    budget, latency = manifest.budget, manifest.latency
    if budget is not None:
        met = "met" if budget.budget_met else "MISSED"
        label = (latency.policy or {}).get("label", "the target")
        statistic = latency.measured.statistic or "the measurer's number"
        lines.append(f"  latency on {label}: budget {budget.budget_ms:.3f} ms {met} on the {statistic} of the "
                     f"timed runs; measured {latency.measured.describe()}")
        if latency.measured.spread():
            lines.append(f"    {latency.measured.spread()}")
        dense = latency.dense.describe() if latency.dense else "not measured"
        lines.append(f"    dense {dense}; predicted {latency.predicted.ms:.3f} ms; {budget.criterion} + "
                     f"{budget.allocator}")
        if budget.criterion_note:
            lines.append(f"    criterion: {budget.criterion_note}")
        if budget.recovered_selection:
            lines.append(f"    {_selection_line(budget.recovered_selection)}")
    return lines


def _selection_line(selection: dict) -> str:
    """`kept lpnet's widths: calibration loss after 30 distillation steps 0.129 (uniform's: 0.192)`."""
    losses = {name: c.get("calib_loss_after_recovery") for name, c in selection.get("candidates", {}).items()}
    chosen = selection.get("chosen")
    others = ", ".join(f"{name}'s: {'budget missed' if loss is None else f'{loss:.3f}'}"
                       for name, loss in losses.items() if name != chosen)
    loss = losses.get(chosen)
    return (f"kept {chosen}'s widths: calibration loss after {selection.get('distillation_steps')} distillation "
            f"steps {'not scored' if loss is None else f'{loss:.3f}'} ({others})")


def _recovery_lines(accuracy: Accuracy) -> list[str]:
    """What recovery did, in one line (nothing for manifests written before it was recorded)."""
    done = accuracy.recovery
    if not done:
        return []
    if not done.get("ran"):
        return [f"  recovery: BatchNorm re-calibration only ({done.get('stop_reason')})"]
    return [f"  recovery: distillation from the dense model, {done.get('steps')} steps in {done.get('seconds')} s "
            f"wall ({done.get('thread_cpu_seconds')} s thread-CPU), stopped: {done.get('stop_reason')}; calibration "
            f"accuracy {done.get('calib_accuracy_before', 0):.2%} -> {done.get('calib_accuracy_after', 0):.2%} "
            f"(dense {done.get('dense_calib_accuracy', 0):.2%})"]
