"""PyTorch eager: `cpu/torch` (host clock) and `cuda/torch` (CUDA events after synchronisation)."""

from __future__ import annotations

import torch
from torch import nn

from toolchain.inputs import ModelInputs, call_model, inputs_to
from toolchain.targets import Runtime, register_backend


class TorchCpuRunner:
    def __init__(self, model: nn.Module, example_input: ModelInputs, threads: int):
        torch.set_num_threads(threads)
        self.model = model.eval()
        self.example_input = example_input

    def run(self) -> None:
        with torch.inference_mode():
            call_model(self.model, self.example_input)

    def device_times_ms(self, repeats: int) -> list[float] | None:
        return None


class TorchCudaRunner:
    """Times each run between two CUDA events, synchronising before the first and after the last."""

    def __init__(self, model: nn.Module, example_input: ModelInputs):
        self.model = model.eval().cuda()
        self.example_input = inputs_to(example_input, "cuda")

    def run(self) -> None:
        with torch.inference_mode():
            call_model(self.model, self.example_input)
        torch.cuda.synchronize()

    def device_times_ms(self, repeats: int) -> list[float] | None:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        torch.cuda.synchronize()
        with torch.inference_mode():
            for start, end in zip(starts, ends, strict=True):
                start.record()
                call_model(self.model, self.example_input)
                end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]


@register_backend("cpu", "torch")
class TorchCpuBackend:
    def unavailable_reason(self, target: Runtime) -> str | None:
        return None

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def prepare(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> TorchCpuRunner:
        return TorchCpuRunner(model, inputs_to(example_input, "cpu"), target.threads)


@register_backend("cuda", "torch")
class TorchCudaBackend:
    def unavailable_reason(self, target: Runtime) -> str | None:
        return None if torch.cuda.is_available() else "no CUDA GPU is visible to torch"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "cuda": str(torch.version.cuda)}

    def prepare(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> TorchCudaRunner:
        return TorchCudaRunner(model, example_input)
