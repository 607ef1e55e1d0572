"""TensorRT on `cuda`: registered always, usable only when its Python package and a GPU are present.

Building engines belongs to `toolchain.export.tensorrt`; until that lands here, `prepare` refuses clearly.
"""

from __future__ import annotations

from importlib import metadata

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.targets import Runtime, register_backend


@register_backend("cuda", "tensorrt")
class TensorRtBackend:
    def unavailable_reason(self, target: Runtime) -> str | None:
        try:
            metadata.version("tensorrt")
        except metadata.PackageNotFoundError:
            return "the tensorrt Python package is not installed"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        return None

    def versions(self) -> dict[str, str]:
        return {"tensorrt": metadata.version("tensorrt"), "torch": torch.__version__}

    def prepare(self, model: nn.Module, example_input: torch.Tensor, target: Runtime):
        raise ToolchainError(
            "timing through TensorRT needs toolchain.export.tensorrt, which is not merged yet"
        )
