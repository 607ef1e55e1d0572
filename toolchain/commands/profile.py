"""`toolchain profile`: time sampled pruned variants of a model on a target into the measurement database."""

from __future__ import annotations

import json

import click

from toolchain import defaults
from toolchain.commands.options import (
    db_option,
    input_option,
    input_shape_option,
    model_option,
    rpc_endpoint,
    rpc_options,
    target_options,
)
from toolchain.commands.validation import NON_NEGATIVE_MS, SHARE, count
from toolchain.latency.campaign import CampaignConfig, CampaignReport


def _device_rpc_target(device_name: str, rpc_tracker: str | None, rpc_key: str | None) -> str:
    """A remote device is reached through TVM RPC; its CPU target comes from the device table."""
    from toolchain.errors import ToolchainError
    from toolchain.targets.devices import get_device, rpc_target_json

    device = get_device(device_name)
    if device.name != "cpu" and not (rpc_tracker and rpc_key):
        raise ToolchainError(f"profiling {device.name} needs the board: give --rpc-tracker HOST:PORT and --rpc-key "
                             "(make profile TARGET=... RPC_TRACKER=... RPC_KEY=...)")
    return rpc_target_json(device)


@click.command("profile")
@model_option()
@input_shape_option
@input_option
@target_options
@click.option("--samples", default=CampaignConfig.samples, show_default=True, type=count(1),
              help="width configurations to measure")
@db_option
@click.option("--seed", default=CampaignConfig.seed, show_default=True, type=count(0, 2**32 - 1))
@click.option("--min-ratio", default=CampaignConfig.min_ratio, show_default=True, type=SHARE,
              help="smallest width / dense width")
@click.option("--layer-levels", default=CampaignConfig.layer_levels, show_default=True, type=count(0, 64),
              help="single-op grid levels per channel axis for the lookup table (0 = none)")
@click.option("--noise-configs", default=CampaignConfig.noise_configs, show_default=True, type=count(0),
              help="configurations re-measured (3 replicates each) to estimate the noise floor")
@click.option("--warmup", default=defaults.WARMUP_RUNS, show_default=True, type=count(0),
              help="warm-up runs per attempt")
@click.option("--runs", default=defaults.TIMED_RUNS, show_default=True, type=count(1), help="timed runs per attempt")
@click.option("--min-timed-ms", default=defaults.MIN_TIMED_MS, show_default=True, type=NON_NEGATIVE_MS,
              help="timed runs of an attempt span at least this long (more runs for small models)")
@click.option("--build-workers", default=CampaignConfig.build_workers, show_default=True, type=count(1),
              help="processes building each chunk's variants before it is timed (never while timing)")
@rpc_options
@click.option("--spread-configs", default=CampaignConfig.spread_configs, show_default=True, type=count(0),
              help="on a farm (--rpc-tracker/--rpc-key): time this many configurations on every board too, to "
                   "measure how much the boards differ")
@click.option("--rpc-target", default="", help='TVM target of the device as JSON, e.g. {"kind": "llvm", ...}')
@click.option("--device", default=None,
              help="a device from the device table (jetson, h100, ...): its CPU is profiled through TVM RPC, "
                   "with --rpc-target taken from the table")
def profile(model, input_shape, inputs, target, backend, threads, clock, statistic, samples, db_path, seed, min_ratio,
            layer_levels, noise_configs, warmup, runs, min_timed_ms, build_workers, rpc_tracker, rpc_key,
            spread_configs, rpc_target, device):
    """Sample per-group widths, build each pruned variant, time it, and store one row per configuration."""
    from toolchain.inputs import specs_key
    from toolchain.latency.measure import MeasureConfig
    from toolchain.targets import get_target, resolve_clock

    if inputs and input_shape:
        raise click.UsageError("give --input or --input-shape, not both")
    if device is not None:
        rpc_target = _device_rpc_target(device, rpc_tracker, rpc_key) or rpc_target
    rpc = rpc_endpoint(rpc_tracker, rpc_key, rpc_target)
    if spread_configs and rpc is None:
        raise click.UsageError("--spread-configs needs a farm: give --rpc-tracker and --rpc-key")
    if rpc is not None:
        backend = backend or "tvm"  # a remote device is timed through TVM RPC
    # Bad names fail before the progress bar appears.
    clock = resolve_clock(clock, get_target(target, backend, threads, rpc=rpc))
    config = CampaignConfig(
        model=model, input_shape=specs_key(inputs) if inputs else input_shape, db_path=db_path, target=target,
        backend=backend, threads=threads, samples=samples, seed=seed, min_ratio=min_ratio, layer_levels=layer_levels,
        noise_configs=noise_configs, build_workers=build_workers, rpc=rpc, spread_configs=spread_configs,
        measure=MeasureConfig(warmup_runs=warmup, timed_runs=runs, clock=clock, statistic=statistic,
                              min_timed_ms=min_timed_ms))
    report = _run_with_progress(config)
    summary = {"db": db_path, "planned": report.planned, "measured": report.measured,
               "already_stored": report.skipped, "failed": len(report.failed), "build_workers": report.build_workers}
    if rpc is not None:
        summary.update(devices=report.devices, lost=report.lost, device_spread=_device_spread(db_path, statistic))
    click.echo(json.dumps(summary))
    for failure in report.failed[:10]:
        click.echo(f"failed: {failure}", err=True)
    if report.failed:
        raise SystemExit(1)


def _device_spread(db_path: str, statistic: str) -> dict:
    """How much the farm's boards differ, from every per-board timing in the database ({}: fewer than two)."""
    from toolchain.latency.spread import board_spread
    from toolchain.latency.store import MeasurementStore

    with MeasurementStore(db_path) as store:
        return board_spread(store.device_timings(), statistic)


def _run_with_progress(config: CampaignConfig) -> CampaignReport:
    """Run the campaign under a progress bar (elapsed time and ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from toolchain.latency.campaign import run_campaign

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"profiling {config.model}", total=None)

        def on_progress(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total, description=f"{config.model}: {what}")

        return run_campaign(config, on_progress)


if __name__ == "__main__":
    profile()
