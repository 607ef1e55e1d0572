"""Shared fixtures: small example inputs so the whole suite fits a 2-core CPU machine."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels run through Triton's CPU interpreter, which must be switched on before
# triton is first imported: importing toolchain does that (Torch-Pruning imports torch._dynamo, which
# imports triton), so it is set here, before the first toolchain import of the test session.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from toolchain.models import get_model_spec  # noqa: E402

# Reduced spatial sizes for the ImageNet-sized models: the zoo models are fully convolutional
# up to global pooling, so pruning and export behave the same at 64x64 as at 224x224.
SMALL_INPUT_SHAPES = {
    "resnet18": (1, 3, 64, 64),
    "resnet50": (1, 3, 64, 64),
    "densenet121": (1, 3, 64, 64),
    "mobilenet_v2": (1, 3, 64, 64),
    "unet": (1, 3, 64, 64),
}


def small_input_shape(name: str) -> tuple[int, ...]:
    return SMALL_INPUT_SHAPES.get(name, get_model_spec(name).input_shape)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def example_input(name: str) -> torch.Tensor:
    return torch.randn(small_input_shape(name), generator=torch.Generator().manual_seed(0))


def pytest_configure(config):
    # One torch thread per test worker: `make test` runs two workers on a 2-core machine.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
