"""`toolchain sweep`: prune one model at many budgets with several criteria and allocators, resumably."""

from __future__ import annotations

from pathlib import Path

import click

from toolchain.commands.timing_options import clock_option, statistic_option
from toolchain.commands.validation import THREADS
from toolchain.errors import ToolchainError
from toolchain.shapes import parse_shape


def _names(text: str, valid: list[str], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise ToolchainError(f"unknown {what} {unknown[0] if unknown else text!r}; valid: {', '.join(valid)}")
    return names


@click.command("sweep")
@click.option("--model", required=True, help="zoo:NAME or path/to/file.py:factory")
@click.option("--weights", type=click.Path(dir_okay=False), help="safetensors or .pt (weights_only)")
@click.option("--input-shape", callback=parse_shape, help="e.g. 1,3,32,32 (default: the zoo's)")
@click.option("--data", help="mnist5k, cifar10:DIR, or file.py:function (default: mnist5k for zoo:demo)")
@click.option("--target", default="cpu", show_default=True)
@click.option("--backend", default=None, help="default: the target's default backend")
@click.option("--threads", type=THREADS, default=1, show_default=True)
@clock_option
@statistic_option
@click.option("--budgets", default="0.3:0.9:0.1", show_default=True,
              help="shares of the dense measured latency: start:stop:step or a comma list")
@click.option("--criteria", default="l1,taylor,shapley,composite", show_default=True)
@click.option("--allocators", default="lpnet,knapsack,uniform,macs", show_default=True)
@click.option("--finetune-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="> 0: every point also reports accuracy after this much distillation fine-tuning")
@click.option("--shapley-samples", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--profile-samples", type=click.IntRange(min=10), default=100, show_default=True)
@click.option("--predictor", help="lpnet artifact folder (default: found or built under runs/predictors)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes (one criterion each); measurements never overlap")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def sweep(model, weights, input_shape, data, target, backend, threads, clock, statistic, budgets, criteria, allocators,
          finetune_steps, shapley_samples, profile_samples, predictor, workers, out) -> None:
    """Run every budget x criterion x allocator point; rows go to OUT/rows.csv and OUT/rows.json."""
    from toolchain.allocate import list_allocators
    from toolchain.cli import Steps
    from toolchain.saliency import SaliencyConfig, list_criteria
    from toolchain.sweep import SweepConfig, parse_budgets, run_sweep
    from toolchain.targets import Target

    measured_on = Target(target, backend, threads, clock, statistic, profile_samples=profile_samples)
    measured_on.resolve()  # an unknown target or backend fails here, before the model is loaded
    config = SweepConfig(
        model=model, out=out, budgets=parse_budgets(budgets),
        criteria=_names(criteria, list_criteria(), "criterion"),
        allocators=_names(allocators, list_allocators(), "allocator"),
        target=measured_on,
        data=data, weights=weights, input_shape=input_shape,
        finetune_steps=finetune_steps, workers=workers, predictor=predictor,
        saliency=SaliencyConfig(shapley_samples=shapley_samples))
    rows = run_sweep(config, Steps())
    measured = [r for r in rows if r.get("error") is None]
    hits = sum(bool(r["within_band"]) for r in measured)
    click.echo(f"wrote {out}/rows.csv and rows.json: {len(rows)} points, {len(rows) - len(measured)} errors; "
               f"measured latency within [{config.lower_ratio:.2f}, 1.00] x budget: {hits}/{len(measured)}")
