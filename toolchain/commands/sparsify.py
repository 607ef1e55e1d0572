"""``toolchain sparsify``: swap eligible layers for micro-structured sparse modules and check
the result against the masked dense model.

Example:
    toolchain sparsify --pattern 2:4 --model zoo:resnet18 --json
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import click
import torch

from toolchain.commands.options import input_shape_option, json_option, model_option, out_option, weights_option
from toolchain.commands.validation import FRACTION_BELOW_ONE
from toolchain.inputs import call_model, flatten_outputs, make_inputs, vocab_size_of
from toolchain.kernels.patterns import Pattern
from toolchain.kernels.sparsify import SparsifyConfig, apply_pattern_, sparsify_

# Sparse vs masked-dense outputs (fp32): the kernels only reorder the sums.
OUTPUT_RTOL, OUTPUT_ATOL = 1e-3, 1e-4


def _density(model: torch.nn.Module, names: list[str]) -> float:
    modules = dict(model.named_modules())
    kept = sum(int(modules[name].weight.ne(0).sum()) for name in names)
    total = sum(modules[name].weight.numel() for name in names)
    return kept / max(total, 1)


def run_sparsify(pattern: str, model_spec: str, weights: str | None, input_shape: tuple[int, ...] | None,
                 sparsity: float | None) -> tuple[dict, torch.nn.Module]:
    """Masks, swaps and checks; returns the report and the masked dense model.

    Bad input raises ``ValueError`` with a one-line message (the command turns it into a
    ``ToolchainError``).
    """
    from toolchain.models import resolve_model

    Pattern.parse(pattern)
    config = SparsifyConfig(pattern=pattern, sparsity=sparsity)
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {sparsity}")
    model, specs = resolve_model(model_spec, weights, input_shape)
    shape = specs[0].shape
    model = model.float().eval()
    masked = copy.deepcopy(model)
    with torch.no_grad():
        names = apply_pattern_(masked, config)
        if not names:
            raise ValueError(f"no layer of {model_spec} is eligible for the {pattern} pattern")
        sparse = copy.deepcopy(masked)
        sparsify_(sparse, SparsifyConfig(pattern=pattern, sparsity=sparsity, prune=False))
        x = make_inputs(specs, vocab_size_of(model))
        try:
            expected = torch.cat([t.flatten() for t in flatten_outputs(call_model(masked, x))])
            got = torch.cat([t.flatten() for t in flatten_outputs(call_model(sparse, x))])
        except (RuntimeError, ValueError) as error:
            message = f"forward with input shape {shape} failed: {error}".splitlines()[0]
            raise ValueError(message) from None
    max_abs_error = float((expected - got).abs().max())
    matches = bool(torch.allclose(got, expected, rtol=OUTPUT_RTOL, atol=OUTPUT_ATOL))
    all_layers = [name for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear | torch.nn.Conv2d)]
    report = {
        "model": model_spec,
        "pattern": pattern,
        "sparsity": sparsity,
        "input_shape": list(shape),
        "replaced_layers": names,
        "dense_layers": [name for name in all_layers if name not in names],
        "weight_density_replaced": _density(masked, names),
        "max_abs_error": max_abs_error,
        "tolerance": {"rtol": OUTPUT_RTOL, "atol": OUTPUT_ATOL},
        "outputs_match": matches,
    }
    return report, masked


@click.command("sparsify")
@click.option("--pattern", required=True, help="2:4, N:M, blockRxC (e.g. block4x4), stripe or unifyRxC.")
@model_option()
@weights_option
@input_shape_option
@click.option("--sparsity", type=FRACTION_BELOW_ONE, default=None,
              help="Share of zero blocks/stripes for block, stripe and unify (default 0.5).")
@out_option(required=False, help="Folder for sparsify.json and the masked dense weights (masked.safetensors).")
@json_option
def sparsify(pattern: str, model: str, weights: str | None, input_shape: tuple[int, ...] | None,
             sparsity: float | None, out: Path | None, as_json: bool) -> None:
    """Replace eligible layers with sparse kernels and check them against the masked dense model."""
    from toolchain.errors import ToolchainError
    from toolchain.output_folder import check_output_folder

    if out is not None:
        check_output_folder(out)  # before the model work
    try:
        report, masked = run_sparsify(pattern, model, weights, input_shape, sparsity)
    except ValueError as error:
        raise ToolchainError(str(error).splitlines()[0]) from None
    if out is not None:
        from safetensors.torch import save_file

        from toolchain.output_folder import atomic_folder, write_json

        with atomic_folder(out, marker="sparsify.json") as tmp:
            state = {key: value.detach().contiguous() for key, value in masked.state_dict().items()}
            save_file(state, str(tmp / "masked.safetensors"))
            write_json(tmp / "sparsify.json", report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{len(report['replaced_layers'])} layers -> {pattern} sparse modules "
                   f"(weight density {report['weight_density_replaced']:.2f}); "
                   f"{len(report['dense_layers'])} kept dense")
        click.echo(f"max |sparse - masked dense| = {report['max_abs_error']:.2e} "
                   f"({'ok' if report['outputs_match'] else 'MISMATCH'})")
    if not report["outputs_match"]:
        error = report["max_abs_error"]
        raise ToolchainError(f"sparse outputs differ from the masked dense model by {error:.2e}")
