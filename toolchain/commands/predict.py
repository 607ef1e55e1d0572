"""`toolchain predict`: the predicted latency (ms) of a pruned model folder, or of a dense model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolchain.commands.options import (
    backend_option,
    checked_backend,
    input_option,
    input_shape_option,
    json_option,
    model_option,
    pruned_option,
    target_option,
    threads_option,
    trust_model_file_option,
)
from toolchain.inputs import InputSpecs
from toolchain.latency.predictors import LatencyQuery, load_predictor


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
@click.option("--predictor", "artifact", required=True, type=click.Path(exists=True, file_okay=False),
              help="artifact folder written by `toolchain fit`")
@pruned_option
@model_option(required=False, help="dense model spec instead of --pruned (with --pruned: the factory its arch.json "
                                   "names)")
@input_shape_option
@input_option
# No defaults: without --target the predictor answers for the target it was trained for.
@checked_backend
@target_option(default=None, help="refuse unless the predictor was trained for this target")
@backend_option(help="refuse unless the predictor was trained for this backend")
@threads_option(default=None)
@json_option
@trust_model_file_option
def predict(artifact, pruned, model, input_shape, inputs, target, backend, threads, as_json, trust_model_file):
    """Print the predicted latency in ms, to hold against your own measurement."""
    if not pruned and not model:
        raise click.UsageError("give --pruned DIR or --model SPEC")
    predictor = load_predictor(artifact, target, backend, threads)
    query = (_pruned_query(pruned, model, trust_model_file) if pruned else _dense_query(model, input_shape, inputs))
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
                    "allocator_heldout_metrics": meta.allocator_heldout_metrics,
                }
            )
        )
        return
    within = meta.heldout_metrics.get("within_10pct")
    quality = f"; held-out within ±10%: {within:.0%}" if within is not None else ""
    quality += f"; on allocator outputs: {a['within_10pct']:.0%}" if (a := meta.allocator_heldout_metrics) else ""
    click.echo(f"{predicted_ms:.3f} ms predicted ({meta.statistic} latency; {meta.predictor} for {meta.target_label}"
               f"{quality})")


if __name__ == "__main__":
    predict()
