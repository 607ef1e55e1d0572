"""ONNX Runtime on the host CPU: the default `cpu` backend."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import torch
from torch import nn

from toolchain.inputs import ModelInputs
from toolchain.targets import Runtime, register_backend
from toolchain.targets.backends._onnx import onnx_bytes_for_timing, onnx_feeds


class OnnxRuntimeRunner:
    """An ORT session (sequential, `threads` intra-op threads, full graph optimisation) bound to its inputs."""

    def __init__(self, onnx_model: bytes, feeds: dict[str, np.ndarray], threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.feeds = feeds

    def run(self) -> None:
        self.session.run(None, self.feeds)

    def device_times_ms(self, repeats: int) -> list[float] | None:
        return None


@register_backend("cpu", "onnxruntime")
class OnnxRuntimeBackend:
    def unavailable_reason(self, target: Runtime) -> str | None:
        try:
            metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            return "the onnxruntime package is not installed"
        return None

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": metadata.version("onnxruntime"), "torch": torch.__version__}

    def prepare(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> OnnxRuntimeRunner:
        return self.load(self.compile(model, example_input, target), example_input, target)

    def compile(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> bytes:
        return onnx_bytes_for_timing(model, example_input)

    def load(self, compiled: bytes, example_input: ModelInputs, target: Runtime) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(compiled, onnx_feeds(example_input), target.threads)
