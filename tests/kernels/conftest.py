"""Kernel tests: without a GPU the Triton kernels run on CPU through the interpreter.

``TRITON_INTERPRET`` must be set before any Triton kernel module is imported, hence here.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def triton_device() -> str:
    """Where the Triton tests run: the GPU if there is one, else the CPU interpreter."""
    return "cuda" if HAS_CUDA else "cpu"
