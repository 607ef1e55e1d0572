"""Validation shared by the Triton host wrappers: the dense activation against a compressed weight."""

from __future__ import annotations

import os

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_operands(x: torch.Tensor, values: torch.Tensor, in_features: int, *extra: torch.Tensor) -> None:
    """`x` [P, K] must match the weight's dtype, K and device, and be contiguous like `values` and `extra`.

    Raises ValueError with a one-line message naming the problem.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D [P, K] tensor, got {getattr(x, 'shape', type(x))}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {x.dtype}; expected one of {SUPPORTED_DTYPES}")
    if x.dtype != values.dtype:
        raise ValueError(f"x is {x.dtype} but the weight is {values.dtype}")
    if not all(t.is_contiguous() for t in (x, values, *extra)):
        raise ValueError("x and the weight's tensors must be contiguous")
    if x.shape[1] != in_features:
        raise ValueError(f"x has K={x.shape[1]} but the weight has K={in_features}")
    if x.device != values.device:
        raise ValueError(f"x is on {x.device} but the weight is on {values.device}")
    if x.device.type != "cuda" and not INTERPRET:
        raise ValueError("the Triton kernel needs a CUDA tensor (or TRITON_INTERPRET=1)")
