"""Budget sweeps: every (budget, criterion, allocator) point, resumable, one row per point (CSV and JSON).

The predictor is found or built and the dense model measured once, in the parent; each criterion is one
task (its scores are computed once for all its points; split by allocator when there are fewer criteria
than workers) run in its own process when `workers` > 1. Rows are
appended to `rows.jsonl` as points finish, so an interrupted sweep resumes where it stopped; `rows.csv` and
`rows.json` are rewritten from it. Latency measurements take the machine-wide measurement lock, so they
never overlap however many workers run.

>>> rows = run_sweep(SweepConfig(model="zoo:demo", out=Path("runs/sweep-demo"), budgets=(0.5, 0.7),
...                              criteria=("l1", "taylor"), allocators=("lpnet", "uniform")))   # doctest: +SKIP

`SweepConfig.providers` replaces the target's predictor and timings (fakes in tests); such a sweep runs in
this process, since providers are not sent to worker processes.
"""

from __future__ import annotations

import csv
import fcntl
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import ConcatDataset, Subset

from toolchain.allocate import BudgetConfig
from toolchain.budget import ScoredModel, prune_to_budget, score_model, target_providers
from toolchain.budget_providers import BudgetProviders, Measurer
from toolchain.data import DataSplits
from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs, make_inputs, vocab_size_of
from toolchain.latency.provision import PROFILE_DB, PredictorInfo
from toolchain.manifest import BUDGET_BAND_LOW, Accuracy, Manifest
from toolchain.output_folder import check_writable
from toolchain.saliency import SaliencyConfig
from toolchain.sweep_executor import ExecutorConfig, check_executor, run_points_on_ray
from toolchain.targets import Target

if TYPE_CHECKING:
    from toolchain.data import DataSplits

ROWS = "rows.jsonl"
COLUMNS = ("key", "model", "budget_ratio", "budget_ms", "criterion", "allocator", "predicted_latency_ms",
           "measured_latency_ms", "measured_statistic", "measured_clock", "dense_latency_ms", "within_band",
           "budget_met", "macs", "dense_macs", "params",
           "dense_params", "dense_accuracy", "accuracy_before_recovery", "accuracy_after_bn_recalibration",
           "accuracy_finetuned", "finetune_steps", "iterations", "calibration_choice", "saliency_s", "saliency_cost",
           "allocate_and_measure_s", "recover_s", "point_s", "seed", "error")


@dataclass(frozen=True)
class SweepConfig:
    model: str
    out: Path
    budgets: tuple[float, ...]  # shares of the dense model's measured latency
    criteria: tuple[str, ...] = ("l2",)
    allocators: tuple[str, ...] = ("lpnet",)
    target: Target = Target()
    data: str | None = None
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    finetune_steps: int = 0  # > 0: each point also reports accuracy after distillation fine-tuning
    refine_rounds: int = 2
    correct_predictor: bool = False  # BudgetConfig.correct_predictor for every point
    check_recovery_steps: int = 0  # BudgetConfig.check_recovery_steps for every point
    recovered_selection_steps: int = 0  # BudgetConfig.recovered_selection_steps for every point
    workers: int = 1
    predictor: str | None = None
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    lower_ratio: float = BUDGET_BAND_LOW  # the hit band is [lower_ratio, 1] x budget
    budget_statistic: str | None = None  # the timed runs' statistic each budget is met on (None: the target's)
    db_path: str = PROFILE_DB  # measurement database for a predictor built on the fly
    seed: int = 0  # > 0: the data's calibration subset and training order drawn with this seed (`reseeded`)
    providers: BudgetProviders | None = field(default=None, compare=False)  # None: the target's
    executor: ExecutorConfig = ExecutorConfig()  # local processes, or Ray tasks here or on a cluster


def parse_budgets(text: str) -> tuple[float, ...]:
    """`0.3:0.9:0.1` (start:stop:step, inclusive) or `0.5,0.7`.

    >>> parse_budgets("0.3:0.6:0.1")
    (0.3, 0.4, 0.5, 0.6)
    """
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            count = int(round((stop - start) / step)) + 1
            values = tuple(round(start + i * step, 6) for i in range(count))
        else:
            values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ToolchainError(f"--budgets {text!r} is not start:stop:step or a comma list of ratios") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise ToolchainError(f"--budgets {text!r}: every budget ratio must be in (0, 1]")
    return values


def reseeded(data: DataSplits, seed: int) -> DataSplits:
    """The same test split; calibration drawn from train + calibration and training order shuffled by `seed`.

    Repeating a sweep over seeds then varies what a run depends on besides the method (which images score
    and re-calibrate, the order fine-tuning sees), so differences between methods can be told from noise.

    >>> splits = reseeded(load_mnist5k(), seed=1)                               # doctest: +SKIP
    >>> (len(splits.train), len(splits.calib))                                  # doctest: +SKIP
    (3500, 500)
    """
    generator = torch.Generator().manual_seed(seed)
    if data.train is None:
        return DataSplits(None, Subset(data.calib, torch.randperm(len(data.calib), generator=generator).tolist()),
                          data.test)
    pool = ConcatDataset([data.train, data.calib])
    order = torch.randperm(len(pool), generator=generator).tolist()
    n_calib = len(data.calib)
    return DataSplits(Subset(pool, order[n_calib:]), Subset(pool, order[:n_calib]), data.test)


def point_key(budget_ratio: float, criterion: str, allocator: str) -> str:
    return f"{budget_ratio:.3f}/{criterion}/{allocator}"


def read_jsonl(path: Path) -> list[dict]:
    """The whole rows of an append-only JSON-lines file; a line cut by a kill mid-write is skipped (that
    point runs again)."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_rows(out: Path) -> list[dict]:
    return list({row["key"]: row for row in read_jsonl(Path(out) / ROWS)}.values())


def repair_rows(out: Path) -> str | None:
    """Mend a `rows.jsonl` whose last line a kill cut mid-write; returns what was done (None: nothing to do).

    Rows are appended whole, so only the last line can be torn. Left as it was, the next row would be
    appended onto it and both would be unreadable. A fragment that still parses (only its newline was lost)
    gets its newline; otherwise it is dropped, and its point runs again.
    """
    path = Path(out) / ROWS
    if not path.is_file():
        return None
    with open(path, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        fragment = data[cut:]
        try:
            json.loads(fragment)
        except (json.JSONDecodeError, UnicodeDecodeError):
            handle.truncate(cut)
            return f"{path}: dropped a last row cut mid-write by an earlier kill ({len(fragment)} bytes); " \
                   "that point runs again"
        handle.write(b"\n")
        return f"{path}: the last row had lost its line end (an earlier kill); added it"


def append_row(out: Path, row: dict) -> None:
    with open(Path(out) / ROWS, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)


def write_tables(out: Path) -> list[dict]:
    """Rewrite rows.csv and rows.json from rows.jsonl (sorted by budget, criterion, allocator)."""
    rows = sorted(read_rows(out), key=lambda r: (r["budget_ratio"], r["criterion"], r["allocator"]))
    (Path(out) / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(Path(out) / "rows.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
    return rows


def _row(config: SweepConfig, budget_ratio: float, criterion: str, allocator: str, manifest: dict | None,
         error: str | None, seconds: float) -> dict:
    row = {"key": point_key(budget_ratio, criterion, allocator), "model": config.model, "budget_ratio": budget_ratio,
           "criterion": criterion, "allocator": allocator, "point_s": round(seconds, 2), "seed": config.seed,
           "error": error}
    if manifest is None:
        return row
    m = Manifest.from_json(manifest)
    budget, latency, accuracy, pruning = m.budget, m.latency, m.accuracy or Accuracy(), m.pruning
    wall = budget.wall_s or {}
    # Which candidate the calibration check kept: a blend weight of the allocator's proposal with the uniform
    # allocation ("1.0" = the proposal, "0.0" = uniform) or "global" (one global score threshold).
    checks = [it.calibration_check["chosen"] for it in budget.iterations if it.calibration_check]
    row.update({"budget_ms": budget.budget_ms, "predicted_latency_ms": latency.predicted.ms,
                "measured_latency_ms": latency.measured.ms, "measured_statistic": latency.measured.statistic,
                "measured_clock": latency.measured.clock, "dense_latency_ms": latency.dense.ms,
                "budget_met": budget.budget_met, "macs": pruning.macs, "dense_macs": pruning.dense_macs,
                "params": pruning.params, "dense_params": pruning.dense_params, "dense_accuracy": accuracy.dense,
                "accuracy_before_recovery": accuracy.before_recovery,
                "accuracy_after_bn_recalibration": accuracy.after_bn_recalibration,
                "finetune_steps": accuracy.finetune_steps})
    row.update({"within_band": budget.within_band(latency.measured.ms, config.lower_ratio),
                "accuracy_finetuned": accuracy.pruned if accuracy.finetune_steps else None,
                "iterations": len(budget.iterations), "calibration_choice": checks[-1] if checks else None,
                "saliency_s": round(wall.get("saliency", 0.0), 2), "saliency_cost": budget.saliency,
                "allocate_and_measure_s": round(wall.get("allocate_and_measure", 0.0), 2),
                "recover_s": round(wall.get("recover", 0.0), 2), "per_layer_widths": budget.per_layer_widths,
                "measurement_iterations": [it.to_json() for it in budget.iterations]})
    if "recovered_selection" in manifest:  # BudgetConfig.recovered_selection_steps: which search's model was kept
        row.update(recovered_selection=manifest["recovered_selection"],
                   recovered_selection_s=round(wall.get("recovered_selection", 0.0), 2))
    return row


@dataclass(frozen=True)
class PreparedCriterion:
    """What every point of one criterion shares: the dense model, its inputs, the data and the scores."""

    dense: torch.nn.Module
    example_input: ModelInputs
    data: DataSplits | None
    scored: ScoredModel


def prepare_criterion(config: SweepConfig, criterion: str) -> PreparedCriterion:
    """Load the model and data and score the model once for all points of `criterion`."""
    from toolchain.data import check_data_fits, resolve_data
    from toolchain.models import resolve_model

    torch.set_num_threads(1)
    dense, specs = resolve_model(config.model, config.weights, config.input_shape)
    example_input = make_inputs(specs, vocab_size_of(dense))
    data = resolve_data(config.data, config.model)
    if data is not None:
        check_data_fits(dense, data, config.data or "mnist5k")
        if config.seed:
            data = reseeded(data, config.seed)
    scored = score_model(dense, example_input, criterion, (), data, config.saliency)
    return PreparedCriterion(dense, example_input, data, scored)


def run_point(config: SweepConfig, prepared: PreparedCriterion, budget_ratio: float, allocator: str, dense_ms: float,
              predictor: PredictorInfo, measurer: Measurer) -> dict:
    """Prune, recover and evaluate one point; its row (a `ToolchainError` becomes the row's error)."""
    start_s = time.perf_counter()
    criterion = prepared.scored.criterion
    budget = BudgetConfig(budget_ratio=budget_ratio, criterion=criterion, allocator=allocator,
                          finetune_steps=config.finetune_steps, refine_rounds=config.refine_rounds,
                          lower_ratio=config.lower_ratio, budget_statistic=config.budget_statistic,
                          correct_predictor=config.correct_predictor,
                          check_recovery_steps=config.check_recovery_steps,
                          recovered_selection_steps=config.recovered_selection_steps)
    try:
        result = prune_to_budget(prepared.dense, prepared.example_input, budget, predictor, measurer,
                                 data=prepared.data, saliency=config.saliency, scored=prepared.scored,
                                 dense_latency_ms=dense_ms)
        manifest, error = result.manifest, None
    except ToolchainError as exc:
        manifest, error = None, str(exc)
    return _row(config, budget_ratio, criterion, allocator, manifest, error, time.perf_counter() - start_s)


def failed_row(config: SweepConfig, budget_ratio: float, criterion: str, allocator: str, error: str) -> dict:
    """The row of a point that ended without a result of its own (its worker died): the error, no timing."""
    return {**_row(config, budget_ratio, criterion, allocator, None, error, 0.0), "point_s": None}


def _run_criterion(config: SweepConfig, criterion: str, points: list[tuple[float, str]], dense_ms: float,
                   predictor: PredictorInfo | None = None, measurer: Measurer | None = None) -> int:
    """All points of one criterion (scores computed once); returns the number of rows written. A worker
    process is given neither `predictor` nor `measurer` and takes the target's (the predictor the parent
    found or built is at `config.predictor` by then)."""
    prepared = prepare_criterion(config, criterion)
    if predictor is None or measurer is None:
        providers = target_providers(config.target, config.predictor, config.db_path)
        predictor = providers.predictor(config.model, prepared.dense, prepared.example_input, lambda _: None)
        measurer = providers.measurer
    for budget_ratio, allocator in points:
        append_row(config.out, run_point(config, prepared, budget_ratio, allocator, dense_ms, predictor, measurer))
    return len(points)


def _target_identity(target: Target) -> dict:
    """The target as sweep.json records it; `name` is the key sweeps written before `Target` used for the device,
    so their folders still resume."""
    identity = asdict(target)
    identity["name"] = identity.pop("device")
    return identity


def run_sweep(config: SweepConfig, step: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Run every point not yet in `config.out`; returns all rows."""
    from toolchain.models import resolve_model

    out = Path(config.out)
    check_writable(out)
    check_executor(config.executor, config.workers)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"model": config.model, "weights": config.weights, "input_shape": config.input_shape,
                "target": _target_identity(config.target), "data": config.data,
                **({"seed": config.seed} if config.seed else {})}  # seed 0: folders from before seeds resume
    meta_path = out / "sweep.json"
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        if previous.get("identity") != json.loads(json.dumps(identity)):
            raise ToolchainError(f"{out} holds a sweep of another model/target/data; choose another --out")
    dense, specs = resolve_model(config.model, config.weights, config.input_shape)
    example_input = make_inputs(specs, vocab_size_of(dense))
    providers = config.providers or target_providers(config.target, config.predictor, config.db_path)
    step("finding or building the latency predictor")
    predictor = providers.predictor(config.model, dense, example_input, step)
    config = replace(config, predictor=predictor.artifact)
    dense_ms = json.loads(meta_path.read_text()).get("dense_latency_ms") if meta_path.is_file() else None
    if dense_ms is None:
        step("measuring the dense model")
        dense_ms = providers.measurer(dense, example_input)
    meta_path.write_text(json.dumps({"identity": identity, "dense_latency_ms": dense_ms,
                                     "predictor": predictor.artifact, "heldout_error": predictor.heldout_error},
                                    indent=1) + "\n")
    repaired = repair_rows(out)
    if repaired:
        step(repaired)
    done = {row["key"] for row in read_rows(out)}
    tasks: list[tuple[str, list[tuple[float, str]]]] = []
    for criterion in config.criteria:
        points = [(b, a) for b in config.budgets for a in config.allocators if point_key(b, criterion, a) not in done]
        if points:
            tasks.append((criterion, points))
    if len(tasks) < config.workers:  # too few criteria to keep the workers busy: one task per allocator
        tasks = [(c, [p for p in points if p[1] == a]) for c, points in tasks for a in config.allocators
                 if any(p[1] == a for p in points)]
    step(f"{sum(len(p) for _, p in tasks)} points to run ({len(done)} already done)")
    if config.executor.kind == "ray":
        points = [(c, b, a) for c, criterion_points in tasks for b, a in criterion_points]
        run_points_on_ray(config, points, dense_ms, predictor, providers.measurer, step)
    elif config.workers > 1 and config.providers is None and len(tasks) > 1:
        with ProcessPoolExecutor(config.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_criterion, config, c, p, dense_ms) for c, p in tasks]
            for future in futures:
                future.result()
    else:
        for criterion, points in tasks:
            _run_criterion(config, criterion, points, dense_ms, predictor, providers.measurer)
    return write_tables(out)
