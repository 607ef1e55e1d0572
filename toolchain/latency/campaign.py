"""A profiling campaign: sample width configurations of a model, build each physically pruned variant
(random or given weights, timing does not care), measure it on the target, store one row per configuration.

Resumable by construction: the configuration list depends only on (model, seed, samples), every row is
committed as soon as its chunk is timed, and a configuration already in the database is skipped. Killing the
campaign loses at most the chunk being timed (`interleave` configurations, timed together in rounds next to
the sentinel; on remote devices, the one configuration each board is timing). Remote devices (TVM RPC) are a
farm: every free board under the key times at once (toolchain.latency.farm); a board that fails gives its
configuration back to the others, and only when every board is lost does the campaign stop; what was
measured stays.

Example:
    >>> config = CampaignConfig.for_target("zoo:resnet18", "runs/latency.db", Target("cpu"), samples=300)
    >>> report = run_campaign(config)                                                     # doctest: +SKIP
    >>> report.measured, report.skipped                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import nn

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpecs, ModelInputs, make_inputs, specs_from_key, specs_key, vocab_size_of
from toolchain.latency.farm import FarmSettings
from toolchain.latency.features import COMPUTE_OPS, LayerSpec, layer_specs, total_macs
from toolchain.latency.fingerprint import DEVICE_KEY, fingerprint_id, machine_fingerprint
from toolchain.latency.measure import CLOCKS, MeasureConfig, Measurement, latency_ms, measure
from toolchain.latency.sampling import layer_grid_ratios, sample_width_configs
from toolchain.latency.sentinel import SentinelCheck, time_chunk
from toolchain.latency.store import DeviceTiming, MeasurementRow, MeasurementStore, config_key
from toolchain.latency.variants import BuiltVariant, VariantBuilder, build_here, job_input
from toolchain.targets import RpcEndpoint, Runtime, Target, get_target, resolve_clock, runs_on_timing_thread
from toolchain.threads import torch_threads


@dataclass(frozen=True)
class CampaignConfig:
    model: str
    db_path: str
    # An inputs key (`toolchain.inputs.specs_key`): a shape, or `name:dtype:shape` texts; None: the source's own.
    input_shape: tuple | None = None
    target: str = defaults.TARGET
    backend: str | None = defaults.BACKEND
    threads: int = defaults.THREADS
    samples: int = 300
    seed: int = 0
    min_ratio: float = 0.1  # smallest width a budget may ask for, as a fraction of the dense width
    layer_levels: int = 0  # single-op grid: channel levels per axis for each distinct layer shape; 0 = none
    noise_configs: int = 0  # re-measure this many configurations (replicates) for the noise floor
    noise_replicates: int = 3
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    # Configurations timed in rounds together (see measure_interleaved), with the dense model as sentinel
    # (toolchain.latency.sentinel): a chunk whose sentinel ran more than `quiet_tolerance` slower than its best
    # is timed again later, at most `max_retimes` times. Remote devices time one at a time, no sentinel.
    interleave: int = 16
    quiet_tolerance: float = 0.05
    max_retimes: int = 2
    # Processes that build a chunk's variants before it is timed (targets compiling to bytes; see
    # toolchain.latency.variants). 1: build in this process.
    build_workers: int = 2
    rpc: RpcEndpoint | None = None
    # On a farm (every free board under the RPC key times at once): this many of the sampled configurations
    # are also timed on every board, to measure how much boards of one kind differ (toolchain.latency.spread).
    spread_configs: int = 0
    farm: FarmSettings = field(default_factory=FarmSettings)

    @classmethod
    def for_target(cls, model: str, db_path: str, target: Target, **fields) -> CampaignConfig:
        """A campaign on `target`, timed by its measurement policy (`Target.measure_config()`).

        >>> CampaignConfig.for_target("zoo:demo", "runs/latency.db", Target("cpu")).measure.min_timed_ms
        100.0
        """
        runtime = target.resolve()
        return cls(model=model, db_path=db_path, target=runtime.name, backend=runtime.backend,
                   threads=runtime.threads, measure=target.measure_config(), rpc=target.rpc, **fields)


@dataclass(frozen=True)
class Job:
    kind: str  # "model" | "layer"
    widths: dict  # per-group widths, or the single op's LayerSpec as a dict
    replicate: int
    tag: str


@dataclass
class CampaignReport:
    planned: int = 0
    measured: int = 0
    skipped: int = 0  # already in the database
    failed: list[str] = field(default_factory=list)
    retimed: int = 0  # rows replaced by a re-timing in a quieter spell
    build_workers: int = 1  # processes that built the variants (1: this one)
    devices: dict[str, int] = field(default_factory=dict)  # farm board -> rows it timed
    lost: list[str] = field(default_factory=list)  # farm boards that failed ("address: why")


def layer_grid(layers: list[LayerSpec], input_channels: int, levels: int) -> list[LayerSpec]:
    """Each distinct compute-layer shape at a grid of channel counts (fixed model input/output channels)."""
    if levels < 1:
        return []
    compute = [layer for layer in layers if layer.op in COMPUTE_OPS and layer.op != "conv_transpose"]
    grid, seen = [], set()
    for index, layer in enumerate(compute):
        vary_in = not (index == 0 and layer.in_channels == input_channels)
        vary_out = index != len(compute) - 1
        for ratio_in in layer_grid_ratios(levels) if vary_in else [1.0]:
            for ratio_out in layer_grid_ratios(levels) if vary_out else [1.0]:
                cin = max(1, round(layer.in_channels * ratio_in))
                cout = max(1, round(layer.out_channels * ratio_out))
                if layer.op == "dwconv":
                    if ratio_in != ratio_out:
                        continue
                    cin = cout = max(1, round(layer.out_channels * ratio_out))
                spec = LayerSpec(
                    layer.op,
                    cin,
                    cout,
                    layer.kernel,
                    layer.stride,
                    cin if layer.op == "dwconv" else layer.groups,
                    layer.in_h,
                    layer.in_w,
                    layer.out_h,
                    layer.out_w,
                    layer.batch,
                )
                if (spec.signature(), cin, cout) not in seen:
                    seen.add((spec.signature(), cin, cout))
                    grid.append(spec)
    return grid


def plan_jobs(config: CampaignConfig, groups, dense_layers: list[LayerSpec], input_channels: int) -> list[Job]:
    configs = sample_width_configs(groups, config.samples, config.seed, config.min_ratio)
    jobs = [Job("model", c.widths, 0, c.tag) for c in configs]
    for c in configs[: config.noise_configs]:
        jobs += [Job("model", c.widths, r, "noise") for r in range(1, config.noise_replicates + 1)]
    jobs += [
        Job("layer", spec.to_dict(), 0, "single-op")
        for spec in layer_grid(dense_layers, input_channels, config.layer_levels)
    ]
    return jobs


# Starting a worker (a fresh interpreter importing torch and building the model) costs seconds; below this
# many configurations to measure, building them here is as quick.
MIN_JOBS_FOR_BUILD_WORKERS = 32


def check_clock(config: CampaignConfig, target: Runtime) -> None:
    """The thread-CPU clock is only meaningful when the whole inference runs on the calling thread."""
    if config.measure.clock not in CLOCKS:
        raise ToolchainError(f"unknown clock {config.measure.clock!r}; valid: {', '.join(CLOCKS)}")
    if config.measure.clock == "thread_cpu" and not runs_on_timing_thread(target):
        raise ToolchainError(
            f"--clock thread_cpu needs the cpu target with --threads 1 and backend onnxruntime "
            f"or torch (the inference must run on the timing thread), not {target.label}"
        )


def _check_machine(store: MeasurementStore, config: CampaignConfig, target: Runtime, machine_id: str) -> None:
    others = store.fingerprint_ids(config.model, target.name, target.backend, target.threads) - {machine_id}
    if others:
        raise ToolchainError(
            f"{store.path} already holds {config.model} on {target.label} measured on another "
            f"machine or with another clock ({sorted(others)}); use another --db"
        )


def run_campaign(
    config: CampaignConfig,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> CampaignReport:
    """Measure every planned configuration not yet in the database; `on_progress(done, total, what)`."""
    target = get_target(config.target, config.backend, config.threads, rpc=config.rpc)
    config = replace(config, measure=replace(config.measure, clock=resolve_clock(config.measure.clock, target)))
    check_clock(config, target)
    if config.rpc is not None:
        from toolchain.latency.rpc import tracker_unreachable_reason  # on use (see _run_remote)

        if reason := tracker_unreachable_reason(config.rpc):
            raise ToolchainError(reason)  # before the model is built or the database touched
    # Building variants (tracing, export) on one torch thread: several times faster on a busy machine.
    with torch_threads(1):
        return _run(config, target, on_progress)


def _run(config: CampaignConfig, target: Runtime, on_progress) -> CampaignReport:
    from toolchain.graph import PruningGraph
    from toolchain.models import resolve_model

    wanted = specs_from_key(config.input_shape) if config.input_shape else ()
    model, specs = resolve_model(config.model, inputs=wanted)
    model = model.eval()
    input_shape = specs_key(specs)  # the stored key: a shape, or typed named inputs
    example_input = make_inputs(specs, vocab_size_of(model))
    groups = PruningGraph(copy.deepcopy(model), example_input).groups
    dense_layers = layer_specs(model, example_input)
    fingerprint = {**machine_fingerprint(target), "clock": config.measure.clock}
    machine_id = fingerprint_id(fingerprint)
    report = CampaignReport()
    with MeasurementStore(config.db_path) as store:
        _check_machine(store, config, target, machine_id)
        store.save_groups(config.model, input_shape, [(g.name, g.dense_width, g.unit) for g in groups])
        # Two samples can round to the same widths; each configuration is measured once.
        jobs_by_key = {}
        for job in plan_jobs(config, groups, dense_layers, _input_channels(specs)):
            jobs_by_key.setdefault(_job_key(job, config.model, input_shape, target), job)
        jobs = list(jobs_by_key.values())
        done_keys = store.existing_keys()
        pending = [job for key, job in jobs_by_key.items() if key not in done_keys]
        report.planned, report.skipped = len(jobs), len(jobs) - len(pending)
        run = _Run(
            config, target, input_shape, fingerprint, machine_id, model, example_input, store, report, on_progress,
            tuple(jobs),
        )
        (_run_remote if config.rpc else _run_local)(pending, run)
        if on_progress:
            on_progress(len(pending), len(pending), "done")
    return report


def _input_channels(specs: InputSpecs) -> int:
    """Channels of an image input (dimension 1); token inputs have none (their width lives in the layers)."""
    first = specs[0]
    return first.shape[1] if first.torch_dtype.is_floating_point and len(first.shape) > 1 else 1


def _job_key(job: Job, model: str, input_shape, target: Runtime) -> str:
    return config_key(
        job.kind, model, job.widths, input_shape, target.name, target.backend, target.threads, job.replicate
    )


@dataclass(frozen=True)
class _Run:
    """One campaign run: what it measures, where, and where the rows go."""

    config: CampaignConfig
    target: Runtime
    input_shape: tuple[int, ...]  # the model's, also for single-op rows
    fingerprint: dict
    machine_id: str
    model: nn.Module
    example_input: ModelInputs
    store: MeasurementStore
    report: CampaignReport
    on_progress: Callable[[int, int, str], None] | None
    planned: tuple[Job, ...] = ()  # every job of the campaign, stored or not (the spread set survives a resume)


def _build(batch: list[tuple[Job, int]], run: _Run, builder: VariantBuilder):
    """Each (job, re-timings so far)'s built variant, input and runner; (prepared, failed)."""
    prepared, failed = [], []
    for (job, count), built in zip(batch, builder.build([(job.kind, job.widths) for job, _ in batch]), strict=True):
        if isinstance(built, Exception):
            failed.append((job, built))
            continue
        try:
            variant_input = job_input(job.kind, job.widths, run.example_input)
            prepared.append((job, count, built, built.runner(run.target, variant_input)))
        except Exception as error:  # noqa: BLE001 - reported per configuration
            failed.append((job, error))
    return prepared, failed


def _failure(job: Job, error: Exception) -> str:
    if isinstance(error, ToolchainError):
        raise error
    return f"{job.kind} {job.tag} {job.widths}: {type(error).__name__}: {error}"


def _run_local(pending: list[Job], run: _Run) -> None:
    """Chunks of `interleave` jobs timed next to the dense model; chunks timed in a slow spell go to the back
    of the queue, and rows stored before the sentinel's best was known are re-timed at the end."""
    config = run.config
    sentinel = run.target.prepare(run.model, run.example_input)
    check = SentinelCheck(config.quiet_tolerance)
    workers = config.build_workers if len(pending) >= MIN_JOBS_FOR_BUILD_WORKERS else 1
    with VariantBuilder(config.model, run.input_shape, run.model, run.example_input, run.target,
                        workers) as builder:
        _time_queue(pending, run, sentinel, check, builder)
        run.report.build_workers = workers if builder.parallel else 1  # 1 also when the pool broke


def _time_queue(pending: list[Job], run: _Run, sentinel, check: SentinelCheck, builder: VariantBuilder) -> None:
    config, store, report, on_progress = run.config, run.store, run.report, run.on_progress
    statistic = config.measure.statistic
    queue = deque((job, 0) for job in pending)
    stored: dict[str, tuple[Job, int, float, float]] = {}  # key -> (job, retimes, sentinel ms, latency ms)
    settled = 0
    while queue:
        batch = [queue.popleft() for _ in range(min(max(1, config.interleave), len(queue)))]
        if on_progress:
            on_progress(settled, settled + len(batch) + len(queue), f"{batch[0][0].kind} {batch[0][0].tag}")
        prepared, failed = _build(batch, run, builder)
        report.failed += [_failure(job, error) for job, error in failed]
        results, sentinel_ms = time_chunk(sentinel, [runner for *_, runner in prepared], config.measure)
        quiet = check.observe(sentinel_ms)
        for (job, count, built, _), result in zip(prepared, results, strict=True):
            if isinstance(result, Exception):
                report.failed.append(_failure(job, result))
                continue
            if not quiet and count < config.max_retimes:
                queue.append((job, count + 1))
                continue
            row = _row(job, run, built, result)
            value = latency_ms(row, statistic)
            previous = stored.get(row.config_key)
            if previous is None:
                report.measured += int(store.insert(row))
            elif value < previous[3]:  # a re-timing that found the machine quieter supersedes the row
                store.insert(row, replace=True)
                report.retimed += 1
            stored[row.config_key] = (job, count, sentinel_ms, min(value, previous[3]) if previous else value)
            settled += 1
        if not queue:  # rows stored before a quieter sentinel was seen: time them again
            for key, (job, count, seen_ms, _value) in stored.items():
                if not check.is_quiet(seen_ms) and count < config.max_retimes:
                    queue.append((job, count + 1))
                    stored[key] = (job, config.max_retimes, seen_ms, _value)  # once is enough


def _run_remote(pending: list[Job], run: _Run) -> None:
    """On every free board under the RPC key at once (toolchain.latency.farm); with `spread_configs`, the first
    configurations are also timed on every board (toolchain.latency.spread)."""
    from toolchain.latency.farm import run_farm

    config, store, report = run.config, run.store, run.report
    spread_jobs = [job for job in run.planned if job.kind == "model"][: config.spread_configs]
    spread_done = frozenset((t.config_key, t.device) for t in store.device_timings(run.machine_id))
    settled = 0
    host_lock = threading.Lock()  # one build + compile at a time on this host: torch's ONNX exporter is global

    def pinned(address: str) -> list[Job]:
        return [job for job in spread_jobs if (_key(job, run), address) not in spread_done]

    def settle(job: Job, result: tuple[BuiltVariant, Measurement], address: str, is_pinned: bool) -> None:
        nonlocal settled
        built, measured = result
        if is_pinned:
            store.insert_device_timing(DeviceTiming(_key(job, run), address, run.machine_id, measured.median_ms,
                                                    measured.min_ms))
            return
        inserted = store.insert(_row(job, run, built, measured, address))
        report.measured += int(inserted)
        report.devices[address] = report.devices.get(address, 0) + int(inserted)
        settled += 1
        if run.on_progress:
            run.on_progress(settled, len(pending), f"{job.kind} {job.tag} on {address}")

    def fail(job: Job, error: Exception) -> None:
        report.failed.append(_failure(job, error))

    farm = run_farm(config.rpc, pending, lambda job, board: _time_on_board(job, board, run, host_lock), settle,
                    fail, pinned, config.farm)
    report.lost += farm.lost


def _key(job: Job, run: _Run) -> str:
    return _job_key(job, run.config.model, run.input_shape, run.target)


def _time_on_board(job: Job, board, run: _Run, host_lock: threading.Lock) -> tuple[BuiltVariant, Measurement]:
    """Build and compile the job's variant here (JobError when that fails), then upload and time it on the board."""
    from toolchain.latency.farm import JobError
    from toolchain.targets.backends.tvm_backend import compile_for, load_on_session

    try:
        with host_lock:
            built = build_here(job.kind, job.widths, run.model, run.example_input)
            variant_input = job_input(job.kind, job.widths, run.example_input)
            executable = compile_for(built.module, variant_input, run.target)
    except ToolchainError:
        raise
    except Exception as error:
        raise JobError(str(error)) from error
    runner = load_on_session(executable, variant_input, run.target, board.session)
    return BuiltVariant(built.layers), measure(runner, run.config.measure)


def _row(job: Job, run: _Run, built: BuiltVariant, result: Measurement, device: str = "") -> MeasurementRow:
    """The database row of one settled job; `device`: the farm board that timed it."""
    config, target = run.config, run.target
    layers = [LayerSpec(**layer) for layer in built.layers]
    return MeasurementRow(
        kind=job.kind,
        model=config.model,
        widths=job.widths,
        layers=list(built.layers),
        input_shape=tuple(run.input_shape),
        target=target.name,
        backend=target.backend,
        threads=target.threads,
        replicate=job.replicate,
        sample_tag=job.tag,
        macs=total_macs(layers),
        fingerprint_id=run.machine_id,
        fingerprint={**run.fingerprint, DEVICE_KEY: device} if device else run.fingerprint,
        median_ms=result.median_ms,
        iqr_ms=result.iqr_ms,
        mad_ms=result.mad_ms,
        min_ms=result.min_ms,
        n_runs=len(result.samples_ms),
        attempts=result.attempts,
        stable=result.stable,
    )
