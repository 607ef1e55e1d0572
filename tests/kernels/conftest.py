"""Kernel tests: without a GPU the Triton kernels run on CPU through the interpreter.

``TRITON_INTERPRET`` must be set before triton is first imported: the root conftest sets it.
"""

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def triton_device() -> str:
    """Where the Triton tests run: the GPU if there is one, else the CPU interpreter."""
    return "cuda" if HAS_CUDA else "cpu"
