"""`toolchain export`: a pruned folder (or a dense model) to ONNX, verified against PyTorch before it is written."""

from __future__ import annotations

import click

from toolchain import defaults
from toolchain.commands.options import (
    MODEL_HELP,
    input_option,
    input_shape_option,
    model_option,
    out_option,
    pruned_option,
    trust_model_file_option,
    trust_pickle_option,
    weights_option,
)
from toolchain.commands.validation import count
from toolchain.errors import ToolchainError


@click.command("export")
@pruned_option
@model_option(required=False, help=f"or a dense model: {MODEL_HELP} (with --pruned: its factory)")
@weights_option
@input_shape_option
@input_option
@trust_pickle_option
@out_option(file=True, help="the .onnx file")
# The exporter refuses opsets older than the toolchain's (toolchain.export.onnx): refused here, at parse time.
@click.option("--opset", type=count(defaults.ONNX_OPSET), default=defaults.ONNX_OPSET, show_default=True)
@trust_model_file_option
def export(pruned, model, weights, input_shape, inputs, trust_pickle, out, opset, trust_model_file) -> None:
    """Export a pruned folder (or a dense model) to ONNX, verified against PyTorch before it is written."""
    from toolchain.archive import arch_inputs, load_pruned
    from toolchain.export.onnx import export_onnx
    from toolchain.inputs import make_inputs, vocab_size_of
    from toolchain.manifest import NEAR_CONSTANT_NOTE
    from toolchain.models import resolve_model
    from toolchain.output_folder import check_writable

    if pruned is None and model is None:
        raise ToolchainError("give --pruned DIR or --model SPEC")
    check_writable(out)  # before the model is built and exported
    if pruned is not None:
        module, arch = load_pruned(pruned, model, trust_model_file)
        specs = arch_inputs(arch)
    else:
        module, specs = resolve_model(model, weights, input_shape, inputs, trust_pickle)
    example = make_inputs(specs, vocab_size_of(module))
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(module, example, out, opset)
    constant = NEAR_CONSTANT_NOTE if exported.outputs_vary is False else ""
    beside = "".join(f" and {data.name} (its weights)" for data in exported.external_data)
    click.echo(f"wrote {exported.path}{beside} (opset {exported.opset}); max relative error vs PyTorch "
               f"{exported.max_rel_err:.1e}{constant}")
