"""`toolchain sweep`: prune one model at many budgets with several criteria and allocators, resumably."""

from __future__ import annotations

import click

from toolchain.commands.console import Steps
from toolchain.commands.options import (
    ALLOCATOR_LIST,
    CRITERION_LIST,
    budget_statistic_option,
    correct_predictor_option,
    data_option,
    finetune_steps_option,
    input_shape_option,
    model_option,
    out_option,
    predictor_option,
    profile_samples_option,
    quiet_option,
    saliency_config,
    select_after_recovery_option,
    shapley_samples_option,
    target_options,
    weights_option,
)


@click.command("sweep")
@model_option()
@weights_option
@input_shape_option
@data_option
@target_options
@click.option("--budgets", default="0.3:0.9:0.1", show_default=True,
              help="shares of the dense measured latency: start:stop:step or a comma list")
@click.option("--criteria", type=CRITERION_LIST, default="l1,taylor,shapley,composite", show_default=True)
@click.option("--allocators", type=ALLOCATOR_LIST, default="lpnet,knapsack,uniform,macs", show_default=True)
@finetune_steps_option
@correct_predictor_option
@select_after_recovery_option(default=0)  # SweepConfig's: each method is what it is named
@budget_statistic_option
@shapley_samples_option
@profile_samples_option
@predictor_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes (one criterion each); measurements never overlap")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine's processes; ray: one Ray task per point (pip install 'toolchain[ray]')")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="join this Ray cluster (auto or HOST:PORT; this machine a node of it); default: start Ray here")
@out_option()
@quiet_option
def sweep(model, weights, input_shape, data, target, backend, threads, clock, statistic, budgets, criteria, allocators,
          finetune_steps, correct_predictor, select_after_recovery, budget_statistic, shapley_samples, shapley_seconds,
          profile_samples, predictor, workers, executor, ray_address, out, quiet) -> None:
    """Run every budget x criterion x allocator point; rows go to OUT/rows.csv and OUT/rows.json.

    With --finetune-steps > 0 every point also reports accuracy after that much distillation fine-tuning.
    With --executor ray each point is a Ray task; timings still run one at a time, on this machine's device
    (or queued by the board's tracker).
    """
    from toolchain.sweep import SweepConfig, parse_budgets, run_sweep
    from toolchain.sweep_executor import ExecutorConfig
    from toolchain.targets import Target

    measured_on = Target(target, backend, threads, clock, statistic, profile_samples=profile_samples)
    measured_on.resolve()  # an unknown target or backend fails here, before the model is loaded
    config = SweepConfig(
        model=model, out=out, budgets=parse_budgets(budgets), criteria=criteria, allocators=allocators,
        target=measured_on,
        data=data, weights=weights, input_shape=input_shape,
        finetune_steps=finetune_steps, correct_predictor=correct_predictor, budget_statistic=budget_statistic,
        recovered_selection_steps=select_after_recovery,
        workers=workers, predictor=predictor,
        saliency=saliency_config(shapley_samples, shapley_seconds),
        executor=ExecutorConfig(executor, ray_address=ray_address))
    rows = run_sweep(config, Steps(quiet))
    measured = [r for r in rows if r.get("error") is None]
    hits = sum(bool(r["within_band"]) for r in measured)
    click.echo(f"wrote {out}/rows.csv and rows.json: {len(rows)} points, {len(rows) - len(measured)} errors; "
               f"measured latency ({config.budget_statistic or measured_on.statistic} of the timed runs, "
               f"{measured_on.clock} clock) within [{config.lower_ratio:.2f}, 1.00] x budget: {hits}/{len(measured)}")
