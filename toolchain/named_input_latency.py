"""ONNX export, verification and onnxruntime timing for models with several named inputs (token ids, masks).

The cpu/onnxruntime backend (`toolchain.targets.backends.onnxruntime_backend`) and `toolchain.export.onnx`
take one float tensor named `input`; a transformer takes `input_ids` and `attention_mask` (int64). This is
the minimal path for those until the backends take named inputs themselves: same exporter settings as
the backend (TorchScript exporter, opset 17, constant folding), same session options (sequential, full
graph optimisation, `threads` intra-op threads), timed by `latency_models.measure` under the shared
measurement lock.

>>> runner = NamedInputRunner(onnx_bytes(model, inputs), inputs)          # doctest: +SKIP
>>> measure(runner, MeasureConfig(statistic="min", clock="thread_cpu")).min_ms   # doctest: +SKIP
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.export.onnx import MAX_REL_ERR_FP32, max_relative_error
from toolchain.inputs import call_model, flatten_outputs

OPSET = 17


def onnx_bytes(model: nn.Module, inputs: dict[str, torch.Tensor], opset: int = OPSET) -> bytes:
    """Serialised ONNX of `model` at the inputs' fixed shapes, inputs named and typed as given."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.eval(), (), buffer, kwargs=dict(inputs), dynamo=False, opset_version=opset,
                              input_names=list(inputs), do_constant_folding=True)
        except Exception as exc:
            raise ToolchainError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return buffer.getvalue()


class NamedInputRunner:
    """An onnxruntime session bound to named inputs; satisfies `toolchain.targets.Runner`."""

    def __init__(self, onnx_model: bytes, inputs: dict[str, torch.Tensor], threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        declared = [i.name for i in self.session.get_inputs()]
        # the exporter drops inputs the graph does not use; feed exactly what the session declares
        self.feeds = {name: inputs[name].detach().cpu().numpy() for name in declared}

    def outputs(self) -> list[np.ndarray]:
        return self.session.run(None, self.feeds)

    def run(self) -> None:
        self.session.run(None, self.feeds)

    def device_times_ms(self, repeats: int) -> list[float] | None:
        return None


def verify_runner(model: nn.Module, runner: NamedInputRunner, inputs: dict[str, torch.Tensor],
                  tolerance: float = MAX_REL_ERR_FP32) -> float:
    """Max relative error of onnxruntime against PyTorch on `inputs`; raises above `tolerance`."""
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_outputs(call_model(model.eval(), inputs))]
    got = runner.outputs()
    if len(got) != len(expected):
        raise ToolchainError(f"onnxruntime gives {len(got)} outputs, PyTorch {len(expected)}")
    worst = max(max_relative_error(e, g) for e, g in zip(expected, got))
    if worst > tolerance:
        raise ToolchainError(f"onnxruntime differs from PyTorch by {worst:.1e} (relative), above {tolerance:.0e}")
    return worst
