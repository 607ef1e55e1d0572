"""`toolchain predict`: the predicted latency (ms) of a pruned model folder, or of a dense model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolchain.commands.input_options import input_option
from toolchain.commands.validation import THREADS
from toolchain.inputs import InputSpecs
from toolchain.latency.predictors import LatencyQuery, load_predictor
from toolchain.shapes import parse_shape


def _pruned_query(folder: Path, model_spec: str | None, trust_model_file: bool) -> LatencyQuery:
    """A pruned folder written by `toolchain prune`: its arch.json names the model, shape and widths."""
    from toolchain.archive import arch_inputs, load_pruned
    from toolchain.inputs import specs_key

    model, arch = load_pruned(folder, model_spec, trust_model_file)
    widths = {name: int(width) for name, width in arch["per_group_widths"].items()}
    return LatencyQuery.from_model(arch["model"], model, specs_key(arch_inputs(arch)), widths)


def _dense_query(model_spec: str, input_shape: tuple[int, ...] | None, inputs: InputSpecs) -> LatencyQuery:
    from toolchain.inputs import specs_key
    from toolchain.models import resolve_model

    model, specs = resolve_model(model_spec, input_shape=input_shape, inputs=inputs)
    return LatencyQuery.from_model(model_spec, model, specs_key(specs), widths={})


@click.command("predict")
@click.option(
    "--predictor",
    "artifact",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="artifact folder written by `toolchain fit`",
)
@click.option(
    "--pruned",
    "pruned_dir",
    type=click.Path(exists=True, file_okay=False),
    help="pruned model folder written by `toolchain prune`",
)
@click.option("--model", "model_spec", default=None,
              help="dense model spec instead of --pruned (with --pruned: the factory its arch.json names)")
@click.option("--input-shape", callback=parse_shape, help="with --model: e.g. 1,3,224,224 (default: the source's)")
@input_option
@click.option("--target", default=None, help="refuse unless the predictor was trained for this target")
@click.option("--backend", default=None)
@click.option("--threads", default=None, type=THREADS)
@click.option("--json", "as_json", is_flag=True)
@click.option("--trust-model-file", is_flag=True,
              help="with --pruned: import the file.py:factory its arch.json names (runs that file's code)")
def predict(artifact, pruned_dir, model_spec, input_shape, inputs, target, backend, threads, as_json,
            trust_model_file):
    """Print the predicted latency in ms, to hold against your own measurement."""
    if not pruned_dir and not model_spec:
        raise click.UsageError("give --pruned DIR or --model SPEC")
    predictor = load_predictor(artifact, target, backend, threads)
    query = (_pruned_query(Path(pruned_dir), model_spec, trust_model_file) if pruned_dir
             else _dense_query(model_spec, input_shape, inputs))
    predicted_ms = predictor.predict_ms(query)
    meta = predictor.meta
    if as_json:
        click.echo(
            json.dumps(
                {
                    "predicted_ms": predicted_ms,
                    "statistic": meta.statistic,
                    "predictor": meta.predictor,
                    "artifact": artifact,
                    "model": query.model,
                    "input_shape": list(query.input_shape),
                    "target": meta.target,
                    "backend": meta.backend,
                    "threads": meta.threads,
                    "fingerprint_id": meta.fingerprint_id,
                    "heldout_metrics": meta.heldout_metrics,
                }
            )
        )
        return
    within = meta.heldout_metrics.get("within_10pct")
    quality = f"; held-out within ±10%: {within:.0%}" if within is not None else ""
    click.echo(f"{predicted_ms:.3f} ms predicted ({meta.statistic} latency; {meta.predictor} for {meta.target_label}"
               f"{quality})")


if __name__ == "__main__":
    predict()
