"""Edge-CPU sparse GEMM (C++ in ``sparse_gemm.cpp``), its build and its PyTorch references.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` into
``build/kernels-cpu/`` under the repository (override with ``TOOLCHAIN_BUILD_DIR``) and
reused afterwards. The GEMM kernels compute ``y[b] = W @ x[b]`` for ``x`` ``[B, K, L]`` (a
transposed linear input) and return ``[B, O, L]``; the conv kernels take an NCHW input and
gather its (kh, kw, C_in) columns on the fly (implicit GEMM, no im2col buffer).

Example:
    >>> w = torch.randn(8, 12); w[:, 4:8] = 0
    >>> x = torch.randn(2, 12, 5)
    >>> y = bsr_gemm(BlockSparseMatrix.from_dense(w, (4, 4)), x)   # [2, 8, 5], equals w @ x
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from toolchain.kernels.formats import BlockSparseMatrix, NMSparseMatrix
from toolchain.kernels.patterns import from_gemm_view

_SOURCE = Path(__file__).with_name("sparse_gemm.cpp")


def build_directory() -> Path:
    """Where the compiled extension is cached: ``TOOLCHAIN_BUILD_DIR``, else the git-ignored ``build/`` of a
    source checkout, else ``~/.cache/toolchain`` (an installed package must not write into site-packages)."""
    override = os.environ.get("TOOLCHAIN_BUILD_DIR")
    checkout = Path(__file__).resolve().parents[3]
    if override:
        root = Path(override)
    elif (checkout / "pyproject.toml").is_file():
        root = checkout / "build"
    else:
        root = Path.home() / ".cache" / "toolchain"
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


def _check_activation(x: torch.Tensor, dims: int, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != dims:
        raise ValueError(f"x must be a {what} tensor, got {getattr(x, 'shape', type(x))}")
    if x.device.type != "cpu":
        raise ValueError(f"CPU kernel got a tensor on {x.device}")
    if x.dtype != torch.float32:
        raise ValueError(f"CPU sparse kernels support float32 only, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous")


def _check_values(values: torch.Tensor) -> None:
    if values.dtype != torch.float32:
        raise ValueError(f"CPU sparse kernels support float32 only, got {values.dtype}")


def _check_nm(values: torch.Tensor, columns: torch.Tensor, k: int) -> None:
    _check_values(values)
    if columns.dtype != torch.int32 or values.shape != columns.shape:
        raise ValueError("values must be float32 and columns int32 of the same [O, J] shape")
    if columns.numel() and (int(columns.max()) >= k or int(columns.min()) < 0):
        raise ValueError(f"a column index is out of range of K={k}")


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride, padding and dilation (each (h, w)) of a groups=1 convolution."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def as_list(self) -> list[int]:
        return [*self.kernel_size, *self.stride, *self.padding, *self.dilation]


def _check_conv(x: torch.Tensor, k: int, geometry: ConvGeometry) -> None:
    _check_activation(x, 4, "[B, C_in, H, W]")
    taps = geometry.kernel_size[0] * geometry.kernel_size[1]
    if x.shape[1] * taps != k:
        raise ValueError(f"x has {x.shape[1]} channels but the weight expects K={k} = {taps} taps x C_in")


def bsr_gemm(weight: BlockSparseMatrix, x: torch.Tensor) -> torch.Tensor:
    """Block-sparse ``W @ x[b]`` for ``x`` ``[B, K, L]``; returns ``[B, O, L]``."""
    _check_activation(x, 3, "[B, K, L]")
    _check_values(weight.values)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has K={x.shape[1]} rows but the weight has K={weight.shape[1]} columns")
    return extension().bsr_gemm(weight.values, weight.col_indices, weight.row_offsets, x, weight.shape[0])


def bsr_conv2d(weight: BlockSparseMatrix, x: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """Implicit-GEMM convolution of NCHW ``x`` with a block-sparse GEMM-view weight."""
    _check_values(weight.values)
    _check_conv(x, weight.shape[1], geometry)
    return extension().bsr_conv2d(weight.values, weight.col_indices, weight.row_offsets, x, weight.shape[0],
                                  geometry.as_list())


def nm_gemm(values: torch.Tensor, columns: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """N:M ``W @ x[b]`` from kept ``values`` ``[O, J]`` and absolute ``columns`` (int32)."""
    _check_activation(x, 3, "[B, K, L]")
    _check_nm(values, columns, x.shape[1])
    return extension().nm_gemm(values.contiguous(), columns.contiguous(), x)


def nm_conv2d(values: torch.Tensor, columns: torch.Tensor, x: torch.Tensor,
              geometry: ConvGeometry) -> torch.Tensor:
    """Implicit-GEMM convolution of NCHW ``x`` with an N:M weight (GEMM-view ``columns``)."""
    k = x.shape[1] * geometry.kernel_size[0] * geometry.kernel_size[1] if x.dim() == 4 else -1
    _check_conv(x, k, geometry)
    _check_nm(values, columns, k)
    return extension().nm_conv2d(values.contiguous(), columns.contiguous(), x, geometry.as_list())


def nm_sparse_gemm(weight: NMSparseMatrix, x: torch.Tensor) -> torch.Tensor:
    """N:M ``W @ x[b]`` straight from the compressed format."""
    _check_activation(x, 3, "[B, K, L]")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has K={x.shape[1]} rows but the weight has K={weight.shape[1]} columns")
    return nm_gemm(weight.values, weight.column_indices(), x)


def reference_gemm(dense_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PyTorch reference for the GEMM kernels: ``W @ x[b]`` with the dense (masked) weight."""
    return torch.matmul(dense_weight, x)


def reference_conv2d(dense_matrix: torch.Tensor, x: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """PyTorch reference for the conv kernels: ``F.conv2d`` with the GEMM-view weight folded back."""
    out_channels, in_channels = dense_matrix.shape[0], x.shape[1]
    weight = from_gemm_view(dense_matrix, (out_channels, in_channels, *geometry.kernel_size))
    return F.conv2d(x, weight, None, geometry.stride, geometry.padding, geometry.dilation)
