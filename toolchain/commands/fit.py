"""`toolchain fit`: train a latency predictor on the measurement database and print its held-out metrics."""

from __future__ import annotations

import json

import click

from toolchain.commands.options import (
    RegistryChoice,
    backend_option,
    checked_backend,
    db_option,
    json_option,
    out_option,
    statistic_option,
    target_option,
    threads_option,
)
from toolchain.commands.validation import OPEN_FRACTION, count
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.predictors import list_predictor_kinds
from toolchain.targets import list_targets

PREDICTORS = RegistryChoice("predictor", list_predictor_kinds)


@click.command("fit")
@db_option
@click.option("--predictor", "predictor_name", type=PREDICTORS, required=True, help="the predictor to train")
@click.option("--model", "models", multiple=True, help="model spec(s) to train on (default: all in the database)")
@checked_backend
@target_option(help="the target whose measurements are learnt")
@backend_option()
@threads_option()
@click.option("--heldout-fraction", default=0.2, show_default=True, type=OPEN_FRACTION)
@statistic_option
@click.option("--max-train", default=0, show_default=True, type=count(0), help="cap on training configurations")
@out_option(help="the artifact folder (predictor.json + weights.safetensors)")
@json_option
def fit(db_path, predictor_name, models, target, backend, threads, heldout_fraction, statistic, max_train, out,
        as_json):
    """Fit a predictor and save it as an artifact folder (predictor.json + weights.safetensors)."""
    from toolchain.output_folder import check_output_folder

    check_output_folder(out)  # before fitting: a wrong --out costs nothing
    config = FitConfig(
        db_path=db_path,
        predictor=predictor_name,
        models=tuple(models),
        target=target,
        backend=backend or list_targets()[target][0],  # measurements are stored under the resolved backend
        threads=threads,
        heldout_fraction=heldout_fraction,
        max_train=max_train,
        statistic=statistic,
    )
    predictor = fit_predictor(config)
    predictor.save(out)
    metrics = predictor.meta.heldout_metrics
    if as_json:
        click.echo(json.dumps({"artifact": str(out), "n_train": predictor.meta.n_train, **metrics}))
        return
    click.echo(
        f"{predictor_name} for {', '.join(predictor.meta.models)} on {predictor.meta.target_label}: "
        f"trained on {predictor.meta.n_train}, held out {metrics['n']} ({statistic} latency per configuration)"
    )
    click.echo(
        f"  MAPE {metrics['mape_pct']:.2f}%  within ±5% {metrics['within_5pct']:.1%}  "
        f"within ±10% {metrics['within_10pct']:.1%}  Spearman {metrics['spearman'] or float('nan'):.3f}"
    )
    click.echo(f"  saved to {out}")


if __name__ == "__main__":
    fit()
