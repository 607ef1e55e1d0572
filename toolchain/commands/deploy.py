"""`toolchain deploy`: prune for a device, export, verify, and write the deploy bundle with its manifest."""

from __future__ import annotations

import json

import click

from toolchain.commands.console import Steps, library_output_to_stderr, progress_bar, recovery_bar
from toolchain.commands.options import (
    budget_options,
    device_option,
    json_option,
    model_options,
    out_option,
    precision_option,
    pruning_options,
    quiet_option,
    recovery_config,
    recovery_options,
    rpc_endpoint,
    rpc_options,
    saliency_config,
)
from toolchain.commands.prune import print_summary
from toolchain.errors import ToolchainError


@click.command("deploy")
@model_options
@pruning_options
@device_option
@precision_option
@out_option(required=False, help="default: dist/<target>/<model>")
@rpc_options
@budget_options
@recovery_options
@json_option
@quiet_option
def deploy(model, weights, input_shape, inputs, trust_pickle, ratio, round_to, protect, data, target, precision,
           out, rpc_tracker, rpc_key, budget_ms, budget_ratio, criterion, allocator, correct_predictor,
           select_after_recovery, budget_statistic, predictor,
           profile_samples, shapley_samples, shapley_seconds, recover_seconds, no_recover, finetune_steps, as_json,
           quiet) -> None:
    """Prune for a target, export, verify, and write the deploy bundle with its manifest.

    With data (--data, or MNIST-5k for zoo:demo) the pruned model is recovered by distillation from the dense
    model for up to --recover-seconds.
    """
    from toolchain.allocate import BudgetConfig
    from toolchain.bundle import BundleConfig, default_out, write_bundle
    from toolchain.pipeline import PipelineConfig
    from toolchain.pruning import PruneConfig
    from toolchain.targets.devices import get_device, rpc_target_json

    device = get_device(target)
    out = out or default_out(device.name, model)
    # The board's TVM target comes from the device table; cpu is this host's own llvm.
    board_target = rpc_target_json(device)
    rpc = rpc_endpoint(rpc_tracker, rpc_key, board_target)
    recovery, quiet = recovery_config(recover_seconds, no_recover, finetune_steps), as_json or quiet
    on_recovery = recovery_bar(quiet, recovery.mode == "seconds")
    job = None
    if budget_ms is not None or budget_ratio is not None:
        budget = BudgetConfig(budget_ms=budget_ms, budget_ratio=budget_ratio, criterion=criterion, allocator=allocator,
                              round_to=round_to, recovery=recovery, budget_statistic=budget_statistic,
                              protect=tuple(protect), correct_predictor=correct_predictor,
                              recovered_selection_steps=select_after_recovery)
        job = _budget_job(device.name, rpc, budget, predictor, profile_samples,
                          saliency_config(shapley_samples, shapley_seconds), quiet, on_recovery)
    pipeline = PipelineConfig(model=model, out=out, weights=weights, input_shape=input_shape, inputs=inputs,
                              trust_pickle=trust_pickle, data=data,
                              prune=PruneConfig(ratio=ratio, round_to=round_to, protect=tuple(protect)),
                              target=device.name, budget=job, recovery=recovery, on_recovery=on_recovery)
    with library_output_to_stderr():
        manifest = write_bundle(BundleConfig(device=device.name, precision=precision, rpc=rpc), pipeline,
                                Steps(quiet=quiet))
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
    else:
        _print_bundle(manifest, out, device.name)


def _budget_job(device: str, rpc, budget, predictor, profile_samples: int, saliency, quiet: bool, on_recovery):
    """The budget loop's job: measured on this host for cpu, on the board through RPC otherwise."""
    if device != "cpu" and rpc is None:
        raise ToolchainError(f"a latency budget is met by measuring on the target; for {device} give the "
                             "board with --rpc-tracker/--rpc-key (RPC_TRACKER/RPC_KEY), or use --ratio (the "
                             "bundle then labels its latency as predicted)")
    from toolchain.budget import BudgetJob
    from toolchain.targets import Target

    # Timed as the benchmarks time (Target's defaults): the thread-CPU clock here (wall on a board) and the
    # minimum of agreeing attempts. With the wall clock and the median, the on-the-fly predictor learnt the
    # host's slow spells and the final model's accuracy swung between fresh clones (26-71% on the demo).
    spec = Target("cpu", rpc=rpc, profile_samples=profile_samples)
    return BudgetJob(budget, spec, predictor, saliency, on_progress=progress_bar(quiet), on_recovery=on_recovery)


def _print_bundle(manifest: dict, out, device: str) -> None:
    from toolchain.bundle import latency_summary
    from toolchain.manifest import Manifest

    print_summary(manifest, out)
    click.echo(f"  TVM library: {out}/{manifest['tvm']['library']}")
    latency = Manifest.from_json(manifest).latency
    click.echo(f"  {latency_summary(latency, device)}")
    if latency.measured is not None and latency.measured.spread() and manifest.get("budget_ms") is None:
        click.echo(f"    {latency.measured.describe()}; {latency.measured.spread()}")  # a budget run said so above
    if "tensorrt" in manifest:
        click.echo(f"on the board: copy {out}/ there, then run ./build_engine.sh && python3 run.py model.engine")
