"""In-memory ONNX export for timing (the fast TorchScript exporter; the verified one is toolchain.export)."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

INPUT_NAME = "input"


def onnx_bytes_for_timing(model: nn.Module, example_input: torch.Tensor, opset: int = 17) -> bytes:
    """Serialised ONNX of `model` at the fixed shape of `example_input`.

    Timing needs only a faithful graph, not the export proofs of `toolchain.export.onnx`; the TorchScript
    exporter takes ~0.1 s where the dynamo exporter takes seconds, which matters across hundreds of variants.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example_input,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            do_constant_folding=True,
        )
    return buffer.getvalue()
