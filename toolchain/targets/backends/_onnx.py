"""In-memory ONNX export for timing (the fast TorchScript exporter; the verified one is toolchain.export)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from toolchain import defaults
from toolchain.inputs import ModelInputs, as_positional, input_names, input_tensors

INPUT_NAME = "input"  # of a one-tensor model; named inputs keep their names


def onnx_bytes_for_timing(model: nn.Module, example_input: ModelInputs, opset: int = defaults.ONNX_OPSET) -> bytes:
    """Serialised ONNX of `model` at the fixed shapes (and dtypes) of `example_input`.

    Timing needs only a faithful graph, not the export proofs of `toolchain.export.onnx`; the TorchScript
    exporter takes ~0.1 s where the dynamo exporter takes seconds, which matters across hundreds of variants.
    """
    buffer = io.BytesIO()
    module, args = as_positional(model.eval(), example_input)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=input_names(example_input),
            do_constant_folding=True,
        )
    return buffer.getvalue()


def onnx_feeds(example_input: ModelInputs) -> dict[str, np.ndarray]:
    """Every input by the name `onnx_bytes_for_timing` gave it, with its own dtype."""
    return {name: t.detach().cpu().numpy() for name, t in zip(input_names(example_input),
                                                             input_tensors(example_input), strict=True)}
