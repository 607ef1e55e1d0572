"""ONNX export with proof: the exported graph must reproduce eager PyTorch.

>>> path = export_onnx(model, torch.randn(1, 1, 28, 28), "model.onnx")   # doctest: +SKIP
>>> verify_onnx(model, path, torch.randn(1, 1, 28, 28))                  # doctest: +SKIP
3.1e-07
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain.errors import ToolchainError

DEFAULT_OPSET = 17
MAX_REL_ERR_FP32 = 1e-4


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` at the example input's static shape to `path` (written atomically)."""
    if opset < 17:
        raise ToolchainError(f"opset {opset} is too old; the toolchain exports opset >= 17")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    model = model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # The TorchScript exporter is several times faster than the dynamo one on CPU and
            # handles every zoo model; the dynamo exporter is the fallback.
            try:
                torch.onnx.export(model, (example_input,), str(tmp), opset_version=opset, dynamo=False,
                                  input_names=["input"], output_names=["output"])
            except Exception:
                torch.onnx.export(model, (example_input,), str(tmp), opset_version=opset, dynamo=True,
                                  input_names=["input"], output_names=["output"], external_data=False)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ToolchainError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    os.replace(tmp, path)
    return path


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |a - b| / max |a|: relative to the output's scale, so near-zero entries don't dominate."""
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(reference - candidate).max()) / scale


def check_finite_outputs(reference: np.ndarray, candidate: np.ndarray, label: str) -> None:
    """NaN compared with NaN gives a relative error of 0 ("verified"); a model with non-finite outputs is not."""
    for who, values in (("PyTorch", reference), (label, candidate)):
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise ToolchainError(f"cannot verify the {label}: the {who} outputs contain NaN or infinite values "
                                 "(NaN calibration data or weights?)")


def compare_with_pytorch(model: nn.Module, run: Callable[[np.ndarray], list[np.ndarray]], example_input: torch.Tensor,
                         label: str, n_random: int = 2, tolerance: float = MAX_REL_ERR_FP32, seed: int = 0) -> float:
    """Run a compiled model (`run`: input array -> output arrays) and PyTorch on the example and
    `n_random` seeded random inputs; return the max relative error, raise above `tolerance`."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [example_input] + [torch.randn(example_input.shape, generator=generator) for _ in range(n_random)]
    worst = 0.0
    model = model.eval()
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = run(x.numpy())
        if len(got) != len(expected):
            raise ToolchainError(f"{label} has {len(got)} outputs, PyTorch has {len(expected)}")
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != tuple(g.shape):
                raise ToolchainError(f"{label} output shape {g.shape} differs from PyTorch {tuple(e.shape)}")
            check_finite_outputs(e.numpy(), np.asarray(g), label)
            worst = max(worst, max_relative_error(e.numpy(), g))
    if worst > tolerance:
        raise ToolchainError(f"{label} output differs from PyTorch: max relative error {worst:.2e} > {tolerance:.0e}")
    return worst


def verify_onnx(model: nn.Module, path: str | Path, example_input: torch.Tensor, n_random: int = 2,
                tolerance: float = MAX_REL_ERR_FP32, seed: int = 0) -> float:
    """Run the ONNX file in onnxruntime on the example and random inputs; return max relative error.

    Raises `ToolchainError` if it exceeds `tolerance` (1e-4 for fp32).
    """
    session = onnx_session(path)
    input_name = session.get_inputs()[0].name
    return compare_with_pytorch(model, lambda x: session.run(None, {input_name: x}), example_input, "ONNX model",
                                n_random, tolerance, seed)
