"""`toolchain prune`: physically remove channels (a ratio, or widths chosen under a latency budget) and write a
verified pruned-model folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolchain.commands.console import Steps, library_output_to_stderr, progress_bar, recovery_bar
from toolchain.commands.options import (
    budget_options,
    json_option,
    model_options,
    out_option,
    pruning_options,
    quiet_option,
    recovery_config,
    recovery_options,
    saliency_config,
    target_options,
)


@click.command("prune")
@model_options
@pruning_options
@out_option()
@json_option
@quiet_option
@target_options
@budget_options
@recovery_options
def prune(target, backend, threads, clock, statistic, budget_ms, budget_ratio, criterion, allocator, correct_predictor,
          select_after_recovery, budget_statistic, predictor, profile_samples, shapley_samples, shapley_seconds,
          recover_seconds, no_recover, finetune_steps, quiet, **kwargs) -> None:
    """Physically remove channels and write a verified pruned-model folder.

    With --budget-ms or --budget-ratio the widths are chosen so that the model measured on --target meets
    the budget (predictor built on the fly if needed); otherwise --ratio removes that share everywhere.
    With data (--data, or MNIST-5k for zoo:demo) the pruned model is recovered by distillation from the dense
    model for up to --recover-seconds.
    """
    recovery, quiet = recovery_config(recover_seconds, no_recover, finetune_steps), kwargs["as_json"] or quiet
    on_recovery = recovery_bar(quiet, recovery.mode == "seconds")
    job = None
    if budget_ms is not None or budget_ratio is not None:
        from toolchain.allocate import BudgetConfig
        from toolchain.budget import BudgetJob
        from toolchain.targets import Target

        measured_on = Target(target, backend, threads, clock, statistic, profile_samples=profile_samples)
        measured_on.resolve()  # an unknown target or backend fails here, before the model is loaded
        job = BudgetJob(
            BudgetConfig(budget_ms=budget_ms, budget_ratio=budget_ratio, criterion=criterion, allocator=allocator,
                         round_to=kwargs["round_to"], recovery=recovery, budget_statistic=budget_statistic,
                         protect=tuple(kwargs["protect"]), correct_predictor=correct_predictor,
                         recovered_selection_steps=select_after_recovery),
            measured_on, predictor, saliency_config(shapley_samples, shapley_seconds),
            on_progress=progress_bar(quiet), on_recovery=on_recovery)
    run_pipeline(**kwargs, target=target, budget=job, recovery=recovery, on_recovery=on_recovery, quiet=quiet)


def run_pipeline(model, weights, input_shape, inputs, trust_pickle, ratio, round_to, protect, data, out, as_json,
                 target, budget, recovery, on_recovery, quiet) -> None:
    """Write the pruned folder and print its manifest (`--json`) or a summary."""
    from toolchain.pipeline import PipelineConfig, write_pruned_folder
    from toolchain.pruning import PruneConfig

    config = PipelineConfig(model=model, out=out, weights=weights, input_shape=input_shape, inputs=inputs,
                            trust_pickle=trust_pickle, data=data,
                            prune=PruneConfig(ratio=ratio, round_to=round_to, protect=tuple(protect)), target=target,
                            budget=budget, recovery=recovery, on_recovery=on_recovery)
    with library_output_to_stderr():
        manifest = write_pruned_folder(config, Steps(quiet=as_json or quiet))
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
    else:
        print_summary(manifest, out)


def print_summary(manifest: dict, out: Path) -> None:
    from toolchain.manifest import Manifest, summary_lines

    onnx_files = "model.onnx + model.onnx.data" if (out / "model.onnx.data").is_file() else "model.onnx"
    click.echo(f"wrote {out}/ ({onnx_files}, arch.json, weights.safetensors, manifest.json)")
    for line in summary_lines(Manifest.from_json(manifest)):
        click.echo(line)
