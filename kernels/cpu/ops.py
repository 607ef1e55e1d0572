"""Edge-CPU sparse GEMM (C++ in ``sparse_gemm.cpp``), its build and its PyTorch references.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` into
``build/kernels-cpu/`` under the repository (override with ``TOOLCHAIN_BUILD_DIR``) and
reused afterwards. Both kernels compute ``y[b] = W @ x[b]`` with ``x`` of shape
``[B, K, L]`` (columns of an im2col, or a transposed linear input) and return ``[B, O, L]``.

Example:
    >>> w = torch.randn(8, 12); w[:, 4:8] = 0
    >>> x = torch.randn(2, 12, 5)
    >>> y = bsr_gemm(BlockSparseMatrix.from_dense(w, (4, 4)), x)   # [2, 8, 5], equals w @ x
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from kernels.formats import BlockSparseMatrix, NMSparseMatrix

_SOURCE = Path(__file__).with_name("sparse_gemm.cpp")


def build_directory() -> Path:
    """Where the compiled extension is cached (git-ignored ``build/`` of the repository)."""
    override = os.environ.get("TOOLCHAIN_BUILD_DIR")
    root = Path(override) if override else Path(__file__).resolve().parents[2] / "build"
    path = root / "kernels-cpu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _arch_flags() -> list[str]:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return ["-march=native"]
    if machine in ("aarch64", "arm64"):
        return ["-mcpu=native"]
    return []


@functools.cache
def extension():
    """Compiles (once), loads the C++ extension and returns its ops namespace."""
    from torch.utils import cpp_extension

    cpp_extension.load(
        name="toolchain_sparse_gemm_cpu",
        sources=[str(_SOURCE)],
        build_directory=str(build_directory()),
        extra_cflags=["-O3", "-fopenmp", *_arch_flags()],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.toolchain_sparse


def _check_activation(x: torch.Tensor, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a [B, K, L] tensor, got {getattr(x, 'shape', type(x))}")
    if x.device.type != "cpu":
        raise ValueError(f"CPU kernel got a tensor on {x.device}")
    if x.dtype != torch.float32:
        raise ValueError(f"CPU sparse kernels support float32 only, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous")
    if x.shape[1] != k:
        raise ValueError(f"x has K={x.shape[1]} rows but the weight has K={k} columns")


def bsr_gemm(weight: BlockSparseMatrix, x: torch.Tensor,
             row_perm: torch.Tensor | None = None) -> torch.Tensor:
    """Block-sparse ``W @ x[b]``; ``row_perm[k]`` is the row of ``x`` holding weight column ``k``."""
    _check_activation(x, weight.shape[1])
    if weight.values.dtype != torch.float32:
        raise ValueError(f"CPU sparse kernels support float32 only, got {weight.values.dtype}")
    perm = torch.empty(0, dtype=torch.int32) if row_perm is None else row_perm
    if perm.dtype != torch.int32 or perm.numel() not in (0, weight.shape[1]):
        raise ValueError("row_perm must be int32 with K entries")
    return extension().bsr_gemm(weight.values, weight.col_indices, weight.row_offsets, x, perm,
                                weight.shape[0])


def nm_gemm(values: torch.Tensor, columns: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """N:M ``W @ x[b]`` from kept ``values`` ``[O, J]`` and absolute x-row ``columns`` (int32)."""
    if x.dim() != 3:
        raise ValueError(f"x must be a [B, K, L] tensor, got {tuple(x.shape)}")
    _check_activation(x, x.shape[1])
    if values.dtype != torch.float32 or columns.dtype != torch.int32 or values.shape != columns.shape:
        raise ValueError("values must be float32 and columns int32 of the same [O, J] shape")
    if columns.numel() and int(columns.max()) >= x.shape[1]:
        raise ValueError("a column index is out of range of x")
    return extension().nm_gemm(values.contiguous(), columns.contiguous(), x)


def nm_sparse_gemm(weight: NMSparseMatrix, x: torch.Tensor) -> torch.Tensor:
    """N:M ``W @ x[b]`` straight from the compressed format."""
    _check_activation(x, weight.shape[1])
    return nm_gemm(weight.values, weight.column_indices(), x)


def reference_gemm(dense_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PyTorch reference for both kernels: ``W @ x[b]`` with the dense (masked) weight."""
    return torch.matmul(dense_weight, x)
