"""What the coverage tests and benchmark check on a pruned model, independently of the pruner that made it.

A pruned model is right when every output keeps its dense shape, its outputs are finite, it has fewer
parameters, and its ONNX export runs in onnxruntime with the same outputs. A refusal is clear when it is
one line that names the module (its dotted path in the model) that stopped the pruner.

>>> names_a_module("cannot prune 'blocks.0.attn' (Attention)", timm_vit)   # doctest: +SKIP
True
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain import defaults
from toolchain.inputs import ModelInputs, call_model, flatten_outputs, input_names, input_tensors

ONNX_MAX_REL_ERR = 1e-4  # the toolchain's own fp32 tolerance (toolchain.export.onnx.MAX_REL_ERR_FP32)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_outputs(model: nn.Module, inputs: ModelInputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return flatten_outputs(call_model(model.eval(), inputs))


def names_a_module(message: str, model: nn.Module) -> bool:
    """Whether `message` names a submodule by its dotted path (quoted, or as a whole dotted word).

    Undotted top-level names count only when quoted: a bare `0` or `fc` in prose is not a name.
    """
    for name, _ in model.named_modules():
        if not name:
            continue
        if f"'{name}'" in message or f"`{name}`" in message:
            return True
        if "." in name and re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", message):
            return True
    return False


def shape_problem(dense: list[torch.Tensor], pruned: list[torch.Tensor]) -> str | None:
    """Why pruned outputs are wrong (count, shape, non-finite), or None when they are right."""
    if len(pruned) != len(dense):
        return f"{len(pruned)} outputs instead of {len(dense)}"
    for index, (d, p) in enumerate(zip(dense, pruned)):
        if tuple(d.shape) != tuple(p.shape):
            return f"output {index} has shape {tuple(p.shape)} instead of {tuple(d.shape)}"
        if p.is_floating_point() and not torch.isfinite(p).all():
            return f"output {index} has non-finite values"
    return None


def export_onnx_any_inputs(model: nn.Module, inputs: ModelInputs, path: str | Path,
                           opset: int = defaults.ONNX_OPSET) -> Path:
    """Export with tensor, tuple or named inputs (names kept), TorchScript exporter first, dynamo second."""
    path = Path(path)
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs) if isinstance(inputs, (tuple, list)) \
        else ()
    kwargs = inputs if isinstance(inputs, dict) else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.eval(), args, str(path), kwargs=kwargs, opset_version=opset, dynamo=False,
                              input_names=input_names(inputs))
        except Exception:
            torch.onnx.export(model.eval(), args, str(path), kwargs=kwargs, opset_version=opset, dynamo=True,
                              input_names=input_names(inputs), external_data=False)
    return path


def onnx_max_relative_error(model: nn.Module, inputs: ModelInputs, path: str | Path) -> float:
    """Load `path` in onnxruntime (raises if it refuses the graph), run it on `inputs` and return the max
    relative error against PyTorch over all outputs (relative to each output's largest magnitude)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph_names = [i.name for i in session.get_inputs()]
    named = dict(zip(input_names(inputs), input_tensors(inputs)))
    if set(graph_names) <= set(named):  # inputs the export folded away (unused) are simply not fed
        feeds = {name: named[name].numpy() for name in graph_names}
    else:
        feeds = {name: t.numpy() for name, t in zip(graph_names, input_tensors(inputs))}
    got = session.run(None, feeds)
    expected = [t.numpy() for t in run_outputs(model, inputs)]
    if len(got) != len(expected):
        raise AssertionError(f"ONNX model has {len(got)} outputs, PyTorch has {len(expected)}")
    worst = 0.0
    for e, g in zip(expected, got):
        if e.shape != g.shape:
            raise AssertionError(f"ONNX output shape {g.shape} differs from PyTorch {e.shape}")
        scale = max(float(np.abs(e).max()) if e.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(e.astype(np.float64) - g).max()) / scale if e.size else 0.0)
    return worst
