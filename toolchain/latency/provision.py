"""Predictors for a target: where they and their measurements live, and finding or building one.

One policy for names: a predictor built on the fly goes to `runs/predictors/<model>-<shape>-<where>-<clock>
[-<statistic>]-lpnet`, and its measurements to `runs/latency.db`, suffixed for a board (`-rpc-<key>`) and for
a clock other than the wall clock (`-thread_cpu`), so rows of another device or clock never mix. It is timed
by the target's own measurement policy (`Target.measure_config()`), the same as every other timing.

    >>> from toolchain.targets import Target
    >>> default_predictor_path("zoo:demo", (1, 1, 28, 28), Target("cpu"))
    'runs/predictors/zoo-demo-1x1x28x28-cpu-onnxruntime-1t-thread_cpu-min-lpnet'
    >>> profile_db_for(Target("cpu"))
    'runs/latency-thread_cpu.db'
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from toolchain.allocate import LatencyModel, PredictorLatency
from toolchain.errors import OutdatedArtifactError, ToolchainError
from toolchain.graph import PruningGraph
from toolchain.inputs import make_inputs, specs_from_key, vocab_size_of
from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.predictors import load_predictor
from toolchain.targets import Target, measurement_lock

PREDICTOR_DIR = "runs/predictors"
PROFILE_DB = "runs/latency.db"
Step = Callable[[str], None]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PredictorInfo:
    """The latency model used and where it came from (goes into the manifest)."""

    latency: LatencyModel
    name: str
    artifact: str | None
    heldout_error: dict


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def default_predictor_path(model_spec: str, input_shape: tuple, target: Target) -> str:
    """The lpnet artifact folder of `model_spec` at `input_shape` on `target` (median predictors keep the
    names they had before the statistic was part of the name)."""
    shape = _slug("x".join(map(str, input_shape)))
    statistic = "" if target.statistic == "median" else f"-{target.statistic}"
    return f"{PREDICTOR_DIR}/{_slug(model_spec)}-{shape}-{_slug(target.where)}-{target.clock}{statistic}-lpnet"


def profile_db_for(target: Target, db_path: str = PROFILE_DB) -> str:
    """A board's measurements live in their own database, and so do those timed with another clock: rows of
    a remote device or of the thread-CPU clock never mix with this host's wall-clock rows."""
    path = Path(db_path)
    suffix = (f"-rpc-{_slug(target.rpc.key)}" if target.rpc is not None else "") + \
        (f"-{target.clock}" if target.clock != "wall" else "")
    return str(path.with_name(f"{path.stem}{suffix}{path.suffix}")) if suffix else db_path


def find_or_build_predictor(model_spec: str, dense: nn.Module, input_shape: tuple, target: Target,
                            artifact: str | None = None, db_path: str = PROFILE_DB,
                            on_progress: Progress | None = None, step: Step = lambda _: None) -> PredictorInfo:
    """Load the lpnet artifact for this model and target, or profile the model and fit one (then reuse it).

    `input_shape` is an inputs key (`toolchain.inputs.specs_key`): the shape of one float input, or
    `name:dtype:shape` per named input."""
    runtime = target.resolve()
    path = artifact or default_predictor_path(model_spec, input_shape, target)
    if not (Path(path) / "predictor.json").is_file():
        _build_predictor(model_spec, input_shape, target, path, profile_db_for(target, db_path), on_progress, step)
    try:
        predictor = load_predictor(path, runtime.name, runtime.backend, runtime.threads)
    except OutdatedArtifactError:
        if artifact is not None:  # the user's own artifact: say so rather than overwrite it
            raise
        step(f"{path} was written by an older version: refitting it (stored measurements are reused)")
        _build_predictor(model_spec, input_shape, target, path, profile_db_for(target, db_path), on_progress, step)
        predictor = load_predictor(path, runtime.name, runtime.backend, runtime.threads)
    if predictor.name != "lpnet":
        raise ToolchainError(f"{path} is a {predictor.name!r} predictor; budgets need an lpnet artifact "
                             "(differentiable, per group); fit one with `toolchain fit --predictor lpnet`")
    if predictor.meta.statistic != target.statistic:
        raise ToolchainError(f"{path} predicts {predictor.meta.statistic} latency, but the target measures "
                             f"{target.statistic}; use --statistic {predictor.meta.statistic} or another predictor")
    trained_shape = predictor.meta.input_shapes.get(model_spec)
    if trained_shape is not None and tuple(trained_shape) != tuple(input_shape):
        raise ToolchainError(f"{path} was trained at input shape {tuple(trained_shape)}, not {tuple(input_shape)}")
    graph = PruningGraph(copy.deepcopy(dense), make_inputs(specs_from_key(input_shape), vocab_size_of(dense)))
    return PredictorInfo(PredictorLatency(predictor, [g.name for g in graph.groups]), "lpnet", str(path),
                         dict(predictor.meta.heldout_metrics))


def _build_predictor(model_spec: str, input_shape: tuple, target: Target, path: str, db_path: str,
                     on_progress: Progress | None, step: Step) -> None:
    """Profile `target.profile_samples` configurations into `db_path`, fit lpnet on them, save it at `path`."""
    runtime = target.resolve()
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    step(f"no latency predictor for {model_spec} on {runtime.label}: profiling {target.profile_samples} "
         f"configurations into {db_path}")
    campaign = CampaignConfig.for_target(model_spec, db_path, target, samples=target.profile_samples,
                                         input_shape=tuple(input_shape))
    with measurement_lock(target.lock_path):
        report = run_campaign(campaign, on_progress)
    if report.failed:
        raise ToolchainError(f"profiling failed for {len(report.failed)} configurations: {report.failed[0]}")
    step("fitting the lpnet latency predictor")
    predictor = fit_predictor(FitConfig.for_target(db_path, "lpnet", target, models=(model_spec,)))
    predictor.save(path)
