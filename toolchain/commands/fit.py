"""`toolchain fit`: train a latency predictor on the measurement database and print its held-out metrics."""

from __future__ import annotations

import json

import click

from toolchain.commands.timing_options import statistic_option
from toolchain.commands.validation import OPEN_FRACTION, THREADS, count
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.predictors import list_predictor_kinds


@click.command("fit")
@click.option("--db", "db_path", default="runs/latency.db", show_default=True)
@click.option("--predictor", "predictor_name", required=True, help=f"one of: {', '.join(list_predictor_kinds())}")
@click.option("--model", "models", multiple=True, help="model spec(s) to train on (default: all in the database)")
@click.option("--target", default="cpu", show_default=True)
@click.option("--backend", default="onnxruntime", show_default=True)
@click.option("--threads", default=1, show_default=True, type=THREADS)
@click.option("--heldout-fraction", default=0.2, show_default=True, type=OPEN_FRACTION)
@statistic_option
@click.option("--max-train", default=0, show_default=True, type=count(0), help="cap on training configurations")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def fit(db_path, predictor_name, models, target, backend, threads, heldout_fraction, statistic, max_train, out_dir,
        as_json):
    """Fit a predictor and save it as an artifact folder (predictor.json + weights.safetensors)."""
    from pathlib import Path

    from toolchain.output_folder import check_output_folder

    check_output_folder(Path(out_dir))  # before fitting: a wrong --out costs nothing
    config = FitConfig(
        db_path=db_path,
        predictor=predictor_name,
        models=tuple(models),
        target=target,
        backend=backend,
        threads=threads,
        heldout_fraction=heldout_fraction,
        max_train=max_train,
        statistic=statistic,
    )
    predictor = fit_predictor(config)
    predictor.save(out_dir)
    metrics = predictor.meta.heldout_metrics
    if as_json:
        click.echo(json.dumps({"artifact": out_dir, "n_train": predictor.meta.n_train, **metrics}))
        return
    click.echo(
        f"{predictor_name} for {', '.join(predictor.meta.models)} on {predictor.meta.target_label}: "
        f"trained on {predictor.meta.n_train}, held out {metrics['n']} ({statistic} latency per configuration)"
    )
    click.echo(
        f"  MAPE {metrics['mape_pct']:.2f}%  within ±5% {metrics['within_5pct']:.1%}  "
        f"within ±10% {metrics['within_10pct']:.1%}  Spearman {metrics['spearman'] or float('nan'):.3f}"
    )
    click.echo(f"  saved to {out_dir}")


if __name__ == "__main__":
    fit()
