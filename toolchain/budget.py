"""Pruning under a latency budget: score, allocate through the predictor, shrink, measure, tighten, recover.

    predictor (found, or built on the fly: profile + fit)    dense model measured on the target
            \\                                                 /
      saliency scores -> sensitivity probe -> BudgetSearch: propose widths (allocator, then the measurements)
            -> shrink -> measure on the target -> observe: within [lower_ratio, 1] x budget?  no: re-aim, repeat
            -> recover (BN re-calibration, distillation) -> manifest with predicted and measured latency

The search itself (internal target, trials, the walk between measured models) is `toolchain.budget_search`;
this module wires it to the model, the predictor and the target, and writes the manifest.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from toolchain.allocate import BudgetConfig, build_problem
from toolchain.budget_providers import BudgetProviders, Measurer, PredictorInfo, Step, active_providers
from toolchain.budget_search import BudgetSearch
from toolchain.budget_trial import Trial
from toolchain.errors import OutdatedArtifactError, ToolchainError
from toolchain.graph import PruningGraph, count_macs_params
from toolchain.inputs import ModelInputs, make_inputs, specs_from_key, specs_key, specs_of, vocab_size_of
from toolchain.manifest import Manifest
from toolchain.pruning import PruneConfig, PruneResult, prune
from toolchain.recover import RecoveryConfig, recover
from toolchain.saliency import SaliencyConfig, score_groups_report
from toolchain.saliency.probe import masked_loss, probe_sensitivity

MeasureFn = Measurer  # the target section's name for a measurer


def _macs_counter(dense: nn.Module, example_input: ModelInputs, protect: tuple[str, ...]):
    cache: dict[tuple, int] = {}

    def macs(widths: dict[str, int]) -> int:
        key = tuple(sorted(widths.items()))
        if key not in cache:
            model = copy.deepcopy(dense)
            PruningGraph(model, example_input, protect=protect).shrink(widths)
            cache[key] = count_macs_params(model, example_input)[0]
        return cache[key]

    return macs


@dataclass(frozen=True)
class ScoredModel:
    """A criterion's scores on a copy of the dense model, with the sensitivity probes (reusable across budgets)."""

    model: nn.Module
    graph: PruningGraph
    criterion: str
    scores: dict[str, torch.Tensor]
    report: dict
    sensitivity: dict
    seconds: float


def score_model(dense: nn.Module, example_input: ModelInputs, criterion: str, protect: tuple[str, ...] = (),
                data=None, saliency: SaliencyConfig | None = None) -> ScoredModel:
    """Score every group of `dense` by `criterion` and probe each group's sensitivity on calibration data."""
    start_s = time.perf_counter()
    model = copy.deepcopy(dense).eval()
    graph = PruningGraph(model, example_input, protect=protect)
    calib = data.calib if data is not None else None
    scores, report = score_groups_report(model, graph, criterion, calib, saliency)
    sensitivity = probe_sensitivity(model, graph, scores, calib)
    return ScoredModel(model, graph, criterion, scores, report, sensitivity, time.perf_counter() - start_s)


def prune_to_budget(dense: nn.Module, example_input: ModelInputs, config: BudgetConfig, predictor: PredictorInfo,
                    measurer: Measurer, *, data=None, saliency: SaliencyConfig | None = None,
                    step: Step = lambda _: None, scored: ScoredModel | None = None,
                    dense_latency_ms: float | None = None) -> PruneResult:
    """A pruned copy of `dense` whose latency, timed on the target by `measurer`, meets the budget; its manifest.

    `predictor`: widths -> predicted ms (`target_providers` gives a target's pair; the example's are fakes from
    tests/test_public_api.py). `data` enables data-driven criteria, recovery and accuracies; `scored` and
    `dense_latency_ms` let a sweep score and time the dense model once for many budgets.

    >>> config = toolchain.BudgetConfig(budget_ratio=0.6, criterion="l1", allocator="knapsack")
    >>> result = toolchain.prune_to_budget(toolchain.create_model("demo"), x, config, predictor, measurer)
    >>> result.manifest["measured_latency_ms"] <= result.manifest["budget_ms"]
    True
    """
    saliency, wall_s = saliency or SaliencyConfig(), {}
    with _timed(wall_s, "measure_dense"):
        if dense_latency_ms is None:
            step("measuring the dense model on the target")
            dense_latency_ms = measurer(dense, example_input)
    budget_ms = config.budget_ms if config.budget_ms is not None else config.budget_ratio * dense_latency_ms
    if scored is None or scored.criterion != config.criterion:
        step(f"scoring channels ({config.criterion})")
        scored = score_model(dense, example_input, config.criterion, config.protect, data, saliency)
    wall_s["saliency"] = scored.seconds
    search = _budget_search(dense, example_input, config, predictor, measurer, data, saliency, scored,
                            budget_ms, dense_latency_ms, step)
    with _timed(wall_s, "allocate_and_measure"):
        while (trial := search.propose()) is not None:
            search.observe(search.measure(trial))
    best = search.best()
    result, saliency_report = _final_model(dense, example_input, config, scored, best, data, saliency, step)
    manifest = {**result.manifest, **_budget_fields(config, search, best, result, saliency_report, predictor)}
    with _timed(wall_s, "recover"):
        if data is not None:
            manifest.update(recover(result.model, dense, data, RecoveryConfig(config.finetune_steps), step))
    manifest["wall_s"] = {k: round(v, 2) for k, v in wall_s.items()}
    return replace(result, manifest=manifest)


@contextmanager
def _timed(wall_s: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the wall-clock seconds the block took to `wall_s[phase]` (the manifest's `wall_s`)."""
    start_s = time.perf_counter()
    yield
    wall_s[phase] = time.perf_counter() - start_s


def _budget_search(dense: nn.Module, example_input: ModelInputs, config: BudgetConfig, predictor: PredictorInfo,
                   measurer: Measurer, data, saliency: SaliencyConfig, scored: ScoredModel, budget_ms: float,
                   dense_ms: float, step: Step) -> BudgetSearch:
    """The search over the scored model's groups, trials built by pruning `dense` with the criterion's scores."""
    problem = build_problem(scored.graph.groups, scored.scores, predictor.latency, config.round_to,
                            config.min_keep_ratio, config.sensitive_keep_ratio, scored.sensitivity or None,
                            saliency.probe_keep_ratio, _macs_counter(dense, example_input, config.protect))
    calib = data.calib if data is not None else None

    def build(widths: dict[str, int]) -> PruneResult:
        return prune(dense, example_input, PruneConfig(round_to=config.round_to, protect=config.protect,
                                                       widths=widths), scores=scored.scores)

    def joint_loss(widths: dict[str, int]) -> float:
        return masked_loss(scored.model, scored.graph, scored.scores, widths, calib)

    return BudgetSearch(problem, config, budget_ms, dense_ms, build, measurer, example_input,
                        joint_loss if calib is not None else None, step)


def _final_model(dense: nn.Module, example_input: ModelInputs, config: BudgetConfig, scored: ScoredModel,
                 best: Trial, data, saliency: SaliencyConfig, step: Step) -> tuple[PruneResult, dict]:
    """The chosen trial's model and the saliency report; `composite` re-scores at the chosen widths first."""
    if config.criterion != "composite" or data is None:
        return best.result, scored.report
    step("composite: choosing each group's criterion at its final width")
    scores, report = score_groups_report(scored.model, scored.graph, "composite", data.calib,
                                         replace(saliency, target_widths=best.result.widths))
    return prune(dense, example_input, PruneConfig(round_to=config.round_to, protect=config.protect,
                                                   widths=best.result.widths), scores=scores), report


def _budget_fields(config: BudgetConfig, search: BudgetSearch, best: Trial, result: PruneResult,
                   saliency_report: dict, predictor: PredictorInfo) -> dict:
    """The manifest's budget fields: budget, dense/predicted/measured latency, choices, one entry per trial."""
    return {"budget_ms": round(search.budget_ms, 4), "budget_ratio": config.budget_ratio,
            "dense_latency_ms": round(search.dense_ms, 4), "predicted_latency_ms": round(best.predicted_ms, 4),
            "measured_latency_ms": round(best.measured_ms, 4), "budget_met": best.measured_ms <= search.budget_ms,
            "criterion": config.criterion, "allocator": config.allocator, "per_layer_widths": result.widths,
            "iterations": [t.record() for t in search.trials], "saliency": saliency_report,
            "predictor": {"name": predictor.name, "artifact": predictor.artifact,
                          "heldout_error": predictor.heldout_error}}

# -- the target side: measuring, and finding or building the latency predictor ----------------------------
# Shared by every process timing on this machine (override: TOOLCHAIN_MEASUREMENT_LOCK). Do not also wrap a
# run in `flock` on the same file: the run takes the lock itself around each measurement.
MEASUREMENT_LOCK = os.environ.get("TOOLCHAIN_MEASUREMENT_LOCK", "/tmp/toolchain-bench.lock")
PREDICTOR_DIR = "runs/predictors"
PROFILE_DB = "runs/latency.db"


@dataclass(frozen=True)
class TargetSpec:
    """Where latency is measured: target, backend, threads, host clock, and the on-the-fly profiling size."""

    name: str = "cpu"
    backend: str | None = None
    threads: int = 1
    clock: str = "wall"  # "thread_cpu": CPU time of the timing thread (1-thread CPU targets, loaded machines)
    statistic: str = "median"  # latency of a measurement: median, or min of the timed runs (shared machines)
    warmup_runs: int = 5
    timed_runs: int = 25
    min_timed_ms: float = 100.0  # timed runs span at least this long (more runs for sub-ms models)
    profile_samples: int = 100  # configurations measured when a predictor is built on the fly
    lock_path: str = MEASUREMENT_LOCK
    # A board behind a TVM RPC tracker: profiled, fitted and measured there (backend tvm) instead of here.
    rpc: object | None = field(default=None, compare=False)  # toolchain.targets.RpcEndpoint

    def measure_config(self):
        """How every timing of this target is taken (profiling and budget checks alike)."""
        from toolchain.latency.measure import MeasureConfig

        return MeasureConfig(warmup_runs=self.warmup_runs, timed_runs=self.timed_runs, clock=self.clock,
                             statistic=self.statistic, min_timed_ms=self.min_timed_ms)

    @property
    def where(self) -> str:
        """The label used for predictor and database names: target label, plus the board's key over RPC."""
        label = resolve_target(self).label
        return f"{label}@rpc-{self.rpc.key}" if self.rpc is not None else label


def resolve_target(spec: TargetSpec):
    from toolchain.targets import get_target

    backend = spec.backend or ("tvm" if spec.rpc is not None else None)
    return get_target(spec.name, backend, spec.threads, rpc=spec.rpc)


class measurement_lock:
    """Holds an exclusive `flock` on the shared lock file: latency measurements never overlap."""

    def __init__(self, path: str = MEASUREMENT_LOCK):
        self.path = path

    def __enter__(self):
        import fcntl

        self.handle = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def target_measure(spec: TargetSpec) -> MeasureFn:
    """A `measure_ms(model, x)` timing on the target (ms by `spec.statistic`), compiled on one torch thread,
    under the lock."""
    from toolchain.latency.measure import measure, torch_threads

    target = resolve_target(spec)
    config = spec.measure_config()

    def measure_ms(model: nn.Module, example_input: ModelInputs) -> float:
        if spec.rpc is not None:
            return _measure_on_board(model, example_input)
        with torch_threads(1):
            runner = target.prepare(model.eval(), example_input)
        with measurement_lock(spec.lock_path):
            return measure(runner, config).value(spec.statistic)

    def _measure_on_board(model: nn.Module, example_input: ModelInputs) -> float:
        # Compile, upload and time inside the lock and with retries: a session opened before waiting for
        # the lock can expire while it waits, and a board that drops is reconnected (DeviceLostError after
        # the retries, one line).
        from toolchain.latency.rpc import with_retries

        def timed() -> float:
            with torch_threads(1):
                runner = target.prepare(model.eval(), example_input)
            return measure(runner, config).value(spec.statistic)

        with measurement_lock(spec.lock_path):
            return with_retries(timed, spec.rpc, "timing a pruned model")

    return measure_ms


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def default_predictor_path(model_spec: str, input_shape: tuple, spec: TargetSpec) -> str:
    shape = _slug("x".join(map(str, input_shape)))
    statistic = "" if spec.statistic == "median" else f"-{spec.statistic}"
    return f"{PREDICTOR_DIR}/{_slug(model_spec)}-{shape}-{_slug(spec.where)}-{spec.clock}{statistic}-lpnet"


def profile_db_for(spec: TargetSpec, db_path: str) -> str:
    """A board's measurements live in their own database, and so do those timed with another clock: rows of
    a remote device or of the thread-CPU clock never mix with this host's wall-clock rows."""
    path = Path(db_path)
    suffix = (f"-rpc-{_slug(spec.rpc.key)}" if spec.rpc is not None else "") + \
        (f"-{spec.clock}" if spec.clock != "wall" else "")
    return str(path.with_name(f"{path.stem}{suffix}{path.suffix}")) if suffix else db_path


def find_or_build_predictor(model_spec: str, dense: nn.Module, input_shape: tuple, spec: TargetSpec,
                            artifact: str | None = None, db_path: str = PROFILE_DB,
                            on_progress: Callable[[int, int, str], None] | None = None,
                            step: Step = lambda _: None) -> PredictorInfo:
    """Load the lpnet artifact for this model and target, or profile the model and fit one (then reuse it).

    `input_shape` is an inputs key (`toolchain.inputs.specs_key`): the shape of one float input, or
    `name:dtype:shape` per named input."""
    from pathlib import Path

    from toolchain.allocate import PredictorLatency
    from toolchain.latency.predictors import load_predictor

    target = resolve_target(spec)
    path = artifact or default_predictor_path(model_spec, input_shape, spec)
    if not (Path(path) / "predictor.json").is_file():
        _build_predictor(model_spec, dense, input_shape, spec, path, profile_db_for(spec, db_path), on_progress, step)
    try:
        predictor = load_predictor(path, target.name, target.backend, target.threads)
    except OutdatedArtifactError:
        if artifact is not None:  # the user's own artifact: say so rather than overwrite it
            raise
        step(f"{path} was written by an older version: refitting it (stored measurements are reused)")
        _build_predictor(model_spec, dense, input_shape, spec, path, profile_db_for(spec, db_path), on_progress, step)
        predictor = load_predictor(path, target.name, target.backend, target.threads)
    if predictor.name != "lpnet":
        raise ToolchainError(f"{path} is a {predictor.name!r} predictor; budgets need an lpnet artifact "
                             "(differentiable, per group); fit one with `toolchain fit --predictor lpnet`")
    if predictor.meta.statistic != spec.statistic:
        raise ToolchainError(f"{path} predicts {predictor.meta.statistic} latency, but the target measures "
                             f"{spec.statistic}; use --statistic {predictor.meta.statistic} or another predictor")
    trained_shape = predictor.meta.input_shapes.get(model_spec)
    if trained_shape is not None and tuple(trained_shape) != tuple(input_shape):
        raise ToolchainError(f"{path} was trained at input shape {tuple(trained_shape)}, not {tuple(input_shape)}")
    graph = PruningGraph(copy.deepcopy(dense), make_inputs(specs_from_key(input_shape), vocab_size_of(dense)))
    return PredictorInfo(PredictorLatency(predictor, [g.name for g in graph.groups]), "lpnet", str(path),
                         dict(predictor.meta.heldout_metrics))


def _build_predictor(model_spec, dense, input_shape, spec: TargetSpec, path: str, db_path: str, on_progress,
                     step: Step) -> None:
    from pathlib import Path

    from toolchain.latency.campaign import CampaignConfig, run_campaign
    from toolchain.latency.fitting import FitConfig, fit_predictor

    target = resolve_target(spec)
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    step(f"no latency predictor for {model_spec} on {target.label}: profiling {spec.profile_samples} "
         f"configurations into {db_path}")
    campaign = CampaignConfig(model=model_spec, db_path=db_path, target=target.name, backend=target.backend,
                              threads=target.threads, samples=spec.profile_samples, input_shape=tuple(input_shape),
                              measure=spec.measure_config(), rpc=spec.rpc)
    with measurement_lock(spec.lock_path):
        report = run_campaign(campaign, on_progress)
    if report.failed:
        raise ToolchainError(f"profiling failed for {len(report.failed)} configurations: {report.failed[0]}")
    step("fitting the lpnet latency predictor")
    predictor = fit_predictor(FitConfig(db_path=db_path, predictor="lpnet", models=(model_spec,),
                                        target=target.name, backend=target.backend, threads=target.threads,
                                        statistic=spec.statistic))
    predictor.save(path)




def target_providers(spec: TargetSpec, artifact: str | None = None, db_path: str = PROFILE_DB,
                     on_progress: Callable[[int, int, str], None] | None = None) -> BudgetProviders:
    """The target's own providers: the lpnet predictor found at `artifact` (default: named after the model,
    input and target) or built on the fly into `db_path`, and timings on the target under the lock."""

    def predictor(model_spec: str, dense: nn.Module, example_input: ModelInputs, step: Step) -> PredictorInfo:
        return find_or_build_predictor(model_spec, dense, specs_key(specs_of(example_input)), spec, artifact,
                                       db_path, on_progress, step)

    return BudgetProviders(predictor, target_measure(spec), spec.where)


@dataclass(frozen=True)
class BudgetJob:
    """Everything `toolchain prune --budget-...` needs besides the model: the budget, the target, where the
    predictor is (or goes), and how criteria spend data.

    `providers` replaces the target's predictor and timings (`target_providers`), e.g. with fakes in tests;
    without it, those of an enclosing `using_providers` block are used, else the target's.
    """

    budget: BudgetConfig
    target: TargetSpec = TargetSpec()
    predictor: str | None = None  # lpnet artifact folder; None: runs/predictors/<model>-<shape>-<target>
    saliency: SaliencyConfig = SaliencyConfig()
    db_path: str = PROFILE_DB
    on_progress: Callable[[int, int, str], None] | None = field(default=None, compare=False)
    providers: BudgetProviders | None = field(default=None, compare=False)

    def run(self, model_spec, dense: nn.Module, example_input: ModelInputs, data, step: Step) -> PruneResult:
        providers = (self.providers or active_providers()
                     or target_providers(self.target, self.predictor, self.db_path, self.on_progress))
        spec = model_spec if isinstance(model_spec, str) else type(model_spec).__name__
        info = providers.predictor(spec, dense, example_input, step)
        result = prune_to_budget(dense, example_input, self.budget, info, providers.measurer, data=data,
                                 saliency=self.saliency, step=step)
        result.manifest["latency_target"] = {"label": providers.label, "clock": self.target.clock,
                                             "statistic": self.target.statistic,
                                             "timed_runs": self.target.timed_runs,
                                             "min_timed_ms": self.target.min_timed_ms}
        # typed: the latency section says the measurement's statistic, clock and target (from latency_target)
        return replace(result, manifest=Manifest.from_json(result.manifest).to_json())
