"""`toolchain predict`: the predicted latency (ms) of a pruned model folder, or of a dense model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from latency_models.predictors import LatencyQuery, load_predictor
from toolchain.errors import ToolchainError


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as error:
        raise ToolchainError(f"--input-shape must look like 1,3,224,224, got {text!r}") from error


def _pruned_query(folder: Path) -> LatencyQuery:
    from toolchain.archive import load_pruned

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ToolchainError(
            f"{folder} is not a pruned model folder (no manifest.json); write one with `toolchain prune`"
        )
    manifest = json.loads(manifest_path.read_text())
    model, _ = load_pruned(folder)
    widths = {name: int(width) for name, width in manifest["per_group_widths"].items()}
    return LatencyQuery.from_model(manifest["model"], model, tuple(manifest["input_shape"]), widths)


def _dense_query(model_spec: str, input_shape: str | None) -> LatencyQuery:
    from toolchain.models import resolve_model

    model, default_shape = resolve_model(model_spec)
    shape = _parse_shape(input_shape) if input_shape else tuple(default_shape)
    return LatencyQuery.from_model(model_spec, model, shape, widths={})


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
@click.option("--model", "model_spec", default=None, help="dense model spec instead of --pruned")
@click.option("--input-shape", default=None, help="with --model: e.g. 1,3,224,224 (default: the model's)")
@click.option("--target", default=None, help="refuse unless the predictor was trained for this target")
@click.option("--backend", default=None)
@click.option("--threads", default=None, type=int)
@click.option("--json", "as_json", is_flag=True)
def predict(artifact, pruned_dir, model_spec, input_shape, target, backend, threads, as_json):
    """Print the predicted latency in ms, to hold against your own measurement."""
    if bool(pruned_dir) == bool(model_spec):
        raise click.UsageError("give exactly one of --pruned DIR or --model SPEC")
    predictor = load_predictor(artifact, target, backend, threads)
    query = _pruned_query(Path(pruned_dir)) if pruned_dir else _dense_query(model_spec, input_shape)
    predicted_ms = predictor.predict_ms(query)
    meta = predictor.meta
    if as_json:
        click.echo(
            json.dumps(
                {
                    "predicted_ms": predicted_ms,
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
    click.echo(f"{predicted_ms:.3f} ms  ({meta.predictor} for {meta.target_label}{quality})")


if __name__ == "__main__":
    predict()
