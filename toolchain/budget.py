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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import nn

from toolchain.allocate import BudgetConfig, build_problem
from toolchain.budget_check import loss_after_recovery, recovered_loss
from toolchain.budget_providers import BudgetProviders, Measurer, Step, active_providers
from toolchain.budget_search import BudgetSearch
from toolchain.budget_timing import by_statistic, run_stats, target_timer
from toolchain.budget_trial import Trial
from toolchain.graph import PruningGraph
from toolchain.inputs import ModelInputs, specs_key, specs_of
from toolchain.latency.provision import PROFILE_DB, PredictorInfo, find_or_build_predictor
from toolchain.manifest import Manifest
from toolchain.op_count import count_macs_params
from toolchain.pruning import PruneConfig, PruneResult, prune
from toolchain.recover import OnProgress, recover
from toolchain.saliency import SaliencyConfig, score_groups_report
from toolchain.saliency.probe import masked_loss, probe_sensitivity
from toolchain.targets import Target

# `criterion="auto"` (the CLI's default): the data-driven criterion where there is data, else a data-free one,
# so a budget run without --data prunes (by weight magnitude) instead of stopping; the manifest says which and why.
AUTO_CRITERION = "auto"
DATA_CRITERION = "taylor"  # first-order loss change: the better choice with calibration data (BENCHMARKS.md)
DATA_FREE_CRITERION = "l2"


def resolve_criterion(criterion: str, data) -> tuple[str, str | None]:
    """The criterion a budget run scores with, and why when it was chosen for the user (`auto`).

    >>> resolve_criterion("auto", None)
    ('l2', 'l2 (data-free weight magnitude): no data was given, and taylor needs calibration data')
    >>> resolve_criterion("taylor", None)     # asked for explicitly: scoring refuses it without data
    ('taylor', None)
    """
    if criterion != AUTO_CRITERION:
        return criterion, None
    if data is not None:
        return DATA_CRITERION, f"{DATA_CRITERION} (chosen by auto: calibration data was given)"
    return DATA_FREE_CRITERION, (f"{DATA_FREE_CRITERION} (data-free weight magnitude): no data was given, and "
                                 f"{DATA_CRITERION} needs calibration data")


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
                    dense_latency_ms: float | None = None, on_recovery: OnProgress | None = None) -> PruneResult:
    """A pruned copy of `dense` whose latency, timed on the target by `measurer`, meets the budget; its manifest.

    `predictor`: widths -> predicted ms (`target_providers` gives a target's pair; the example's are fakes from
    tests/test_public_api.py). `data` enables data-driven criteria, recovery (`config.recovery_config`:
    distillation bounded by time unless turned off) and accuracies; `scored` and `dense_latency_ms` let a sweep
    score and time the dense model once for many budgets. `on_recovery(done, total, what)` shows recovery's
    progress. Latencies are by `config.budget_statistic` where the measurer returns the runs' statistics.

    >>> config = toolchain.BudgetConfig(budget_ratio=0.6, criterion="l1", allocator="knapsack")
    >>> result = toolchain.prune_to_budget(toolchain.create_model("demo"), x, config, predictor, measurer)
    >>> result.manifest["measured_latency_ms"] <= result.manifest["budget_ms"]
    True
    """
    saliency, wall_s = saliency or SaliencyConfig(), {}
    criterion, criterion_note = resolve_criterion(config.criterion, data)
    if criterion_note is not None:
        if scored is None:  # else said by whoever scored it (BudgetJob.run)
            step(f"criterion: {criterion_note}")
        config = replace(config, criterion=criterion)
    if scored is None or scored.criterion != config.criterion:  # first: a criterion that needs data fails here
        step(f"scoring channels ({config.criterion})")
        scored = score_model(dense, example_input, config.criterion, config.protect, data, saliency)
    with _timed(wall_s, "measure_dense"):
        if dense_latency_ms is None:
            step("measuring the dense model on the target")
            dense_latency_ms = measurer(dense, example_input)
    dense_runs, dense_latency_ms = run_stats(dense_latency_ms), by_statistic(dense_latency_ms, config.budget_statistic)
    budget_ms = config.budget_ms if config.budget_ms is not None else config.budget_ratio * dense_latency_ms
    wall_s["saliency"] = scored.seconds
    search = _budget_search(dense, example_input, config, predictor, measurer, data, saliency, scored,
                            budget_ms, dense_latency_ms, step)
    with _timed(wall_s, "allocate_and_measure"):
        while (trial := search.propose()) is not None:
            search.observe(search.measure(trial))
    selection = None
    if config.recovered_selection_steps and config.allocator != "uniform" and getattr(data, "train", None) is not None:
        with _timed(wall_s, "recovered_selection"):
            rival = _budget_search(dense, example_input, replace(config, allocator="uniform"), predictor, measurer,
                                   data, saliency, scored, budget_ms, dense_latency_ms, step)
            while (trial := rival.propose()) is not None:
                rival.observe(rival.measure(trial))
            search, selection = _select_after_recovery(dense, data, config, {config.allocator: search,
                                                                              "uniform": rival}, step)
    best = search.best()
    result, saliency_report = _final_model(dense, example_input, config, scored, best, data, saliency, step)
    manifest = {**result.manifest, **_budget_fields(config, search, best, result, saliency_report, predictor)}
    if best.run_stats or dense_runs:  # the measurer returned the runs' statistics (MeasuredMs)
        manifest["latency_runs"] = {"measured": best.run_stats, "dense": dense_runs}
    if criterion_note is not None:
        manifest["criterion_note"] = criterion_note
    if selection is not None:
        manifest["recovered_selection"] = selection
    with _timed(wall_s, "recover"):
        if data is not None:
            manifest.update(recover(result.model, dense, data, config.recovery_config, step, on_recovery))
    manifest["wall_s"] = {k: round(v, 2) for k, v in wall_s.items()}
    return replace(result, manifest=manifest)


def _select_after_recovery(dense: nn.Module, data, config: BudgetConfig, searches: dict[str, BudgetSearch],
                           step: Step) -> tuple[BudgetSearch, dict]:
    """Of the searches' best models that meet the budget, the one with the lowest calibration loss after
    `config.recovered_selection_steps` distillation steps of a copy (`recovered_loss`); what was seen."""
    steps = config.recovered_selection_steps
    step(f"choosing between the {' and the '.join(searches)} allocation after {steps} distillation steps each")
    candidates = {}
    for name, search in searches.items():
        best = search.best()
        met = best.measured_ms <= search.budget_ms
        loss = (recovered_loss(copy.deepcopy(best.result.model), dense, data, config.recovery_config, steps)
                if met else None)
        candidates[name] = {"measured_ms": round(best.measured_ms, 4), "budget_met": met, "tries": len(search.trials),
                            "calib_loss_after_recovery": None if loss is None else round(loss, 4)}
    scored = {name: c["calib_loss_after_recovery"] for name, c in candidates.items()
              if c["calib_loss_after_recovery"] is not None}
    chosen = min(scored, key=scored.get) if scored else config.allocator  # ties: the allocator (first)
    return searches[chosen], {"chosen": chosen, "distillation_steps": steps, "candidates": candidates}


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

    joint_loss = None  # without data, the allocator's proposal is not checked
    if calib is not None and config.check_recovery_steps and getattr(data, "train", None) is not None:
        joint_loss = loss_after_recovery(lambda w: build(w).model, dense, data, config.recovery_config,
                                         config.check_recovery_steps)
    elif calib is not None:
        joint_loss = partial(masked_loss, scored.model, scored.graph, scored.scores, calib=calib)
    return BudgetSearch(problem, config, budget_ms, dense_ms, build, measurer, example_input, joint_loss, step)


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
            **({"budget_statistic": config.budget_statistic} if config.budget_statistic else {}),
            "criterion": config.criterion, "allocator": config.allocator, "per_layer_widths": result.widths,
            "iterations": [t.record() for t in search.trials], "saliency": saliency_report,
            "predictor": {"name": predictor.name, "artifact": predictor.artifact,
                          "heldout_error": predictor.heldout_error}}

def target_providers(spec: Target, artifact: str | None = None, db_path: str = PROFILE_DB,
                     on_progress: Callable[[int, int, str], None] | None = None) -> BudgetProviders:
    """The target's own providers: the lpnet predictor found at `artifact` (default: named after the model,
    input and target) or built on the fly into `db_path`, and timings on the target under the lock."""

    def predictor(model_spec: str, dense: nn.Module, example_input: ModelInputs, step: Step) -> PredictorInfo:
        return find_or_build_predictor(model_spec, dense, specs_key(specs_of(example_input)), spec, artifact,
                                       db_path, on_progress, step)

    return BudgetProviders(predictor, target_timer(spec), spec.where)


@dataclass(frozen=True)
class BudgetJob:
    """Everything `toolchain prune --budget-...` needs besides the model: the budget, the target, where the
    predictor is (or goes), and how criteria spend data.

    `providers` replaces the target's predictor and timings (`target_providers`), e.g. with fakes in tests;
    without it, those of an enclosing `using_providers` block are used, else the target's.
    """

    budget: BudgetConfig
    target: Target = Target()
    predictor: str | None = None  # lpnet artifact folder; None: runs/predictors/<model>-<shape>-<target>
    saliency: SaliencyConfig = SaliencyConfig()
    db_path: str = PROFILE_DB
    on_progress: Callable[[int, int, str], None] | None = field(default=None, compare=False)
    on_recovery: OnProgress | None = field(default=None, compare=False)  # recovery's progress (done, total, what)
    providers: BudgetProviders | None = field(default=None, compare=False)

    def run(self, model_spec, dense: nn.Module, example_input: ModelInputs, data, step: Step) -> PruneResult:
        providers = (self.providers or active_providers()
                     or target_providers(self.target, self.predictor, self.db_path, self.on_progress))
        spec = model_spec if isinstance(model_spec, str) else type(model_spec).__name__
        # Scored before the predictor is found or built (minutes): a criterion that needs data fails at once.
        criterion, note = resolve_criterion(self.budget.criterion, data)
        step(f"scoring channels ({note if note else criterion})")
        scored = score_model(dense, example_input, criterion, self.budget.protect, data, self.saliency)
        info = providers.predictor(spec, dense, example_input, step)
        result = prune_to_budget(dense, example_input, self.budget, info, providers.measurer, data=data,
                                 saliency=self.saliency, step=step, scored=scored, on_recovery=self.on_recovery)
        result.manifest["latency_target"] = {**self.target.describe(), "label": providers.label}
        if result.manifest.get("budget_statistic") is None:  # met on the measurement's own statistic
            result.manifest["budget_statistic"] = self.target.statistic
        # typed: the latency section says the measurement's statistic, clock and target (from latency_target)
        return replace(result, manifest=Manifest.from_json(result.manifest).to_json())
