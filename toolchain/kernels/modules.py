"""Sparse ``Linear`` / ``Conv2d`` modules that keep their weight compressed and dispatch to
the kernels: Triton on CUDA tensors, the C++ edge-CPU kernel on CPU float32 tensors.

The weight lives in its GEMM view (``toolchain.kernels.patterns.gemm_view``) as buffers, so
``.to(device)``, ``.half()`` and ``state_dict`` work as usual.

Example:
    >>> dense = torch.nn.Linear(64, 32)
    >>> dense.weight.data *= pattern_mask(dense.weight, Pattern.parse("2:4"))
    >>> sparse = SparseLinear.from_dense(dense, Pattern.parse("2:4"))
    >>> x = torch.randn(3, 64)
    >>> torch.testing.assert_close(sparse(x), dense(x), rtol=1e-4, atol=1e-4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.kernels.formats import BlockSparseMatrix, NMSparseMatrix
from toolchain.kernels.patterns import Pattern, block_of, follows, gemm_view, segment_of


class _SparseWeight(nn.Module):
    """Holds one compressed GEMM-view weight ``[O, K]`` and computes ``x @ W.T`` or ``W @ x[b]``."""

    def __init__(self, weight: torch.Tensor, pattern: Pattern) -> None:
        super().__init__()
        if not follows(weight, pattern):
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not follow the {pattern} pattern")
        matrix = gemm_view(weight.detach()).contiguous()
        self.pattern = pattern
        self.shape = tuple(matrix.shape)
        if pattern.kind == "nm":
            nm = NMSparseMatrix.from_dense(matrix, pattern.n, pattern.m, segment_of(weight))
            self.nm_meta = (nm.n, nm.m, nm.segment)
            self.register_buffer("values", nm.values)
            self.register_buffer("offsets", nm.offsets)
            self.register_buffer("cpu_columns", nm.column_indices())
        else:
            bsr = BlockSparseMatrix.from_dense(matrix, block_of(pattern, weight))
            self.block = bsr.block
            self.register_buffer("values", bsr.values)
            self.register_buffer("col_indices", bsr.col_indices)
            self.register_buffer("row_offsets", bsr.row_offsets)

    def compressed(self) -> BlockSparseMatrix | NMSparseMatrix:
        if self.pattern.kind == "nm":
            n, m, segment = self.nm_meta
            return NMSparseMatrix(self.values, self.offsets, self.shape, n, m, segment)
        return BlockSparseMatrix(self.values, self.col_indices, self.row_offsets, self.shape, self.block)

    def dense(self) -> torch.Tensor:
        """The GEMM-view weight, decompressed (for references and export)."""
        return self.compressed().to_dense()

    def rows_times_weight(self, x: torch.Tensor) -> torch.Tensor:
        """GPU/Triton form: ``x`` ``[P, K]`` (K in GEMM-view order) → ``[P, O]``."""
        if self.pattern.kind == "nm":
            from toolchain.kernels.triton.nm_sparse import nm_matmul

            return nm_matmul(x, self.compressed())
        from toolchain.kernels.triton.block_sparse import bsr_matmul

        return bsr_matmul(x, self.compressed())

    def weight_times_columns(self, x: torch.Tensor) -> torch.Tensor:
        """CPU form: ``x`` ``[B, K, L]`` → ``[B, O, L]``."""
        from toolchain.kernels.cpu import ops

        if self.pattern.kind == "nm":
            return ops.nm_gemm(self.values, self.cpu_columns, x)
        return ops.bsr_gemm(self.compressed(), x)

    def convolve(self, x: torch.Tensor, geometry) -> torch.Tensor:
        """CPU form of a convolution: NCHW ``x`` → NCHW output (implicit GEMM)."""
        from toolchain.kernels.cpu import ops

        if self.pattern.kind == "nm":
            return ops.nm_conv2d(self.values, self.cpu_columns, x, geometry)
        return ops.bsr_conv2d(self.compressed(), x, geometry)


BACKENDS = ("auto", "triton", "cpu")


def _use_triton(x: torch.Tensor, backend: str, dtype: torch.dtype) -> bool:
    """Validates the input and picks the kernel: ``auto`` is Triton on CUDA, C++ on CPU;
    ``triton`` forces Triton (CPU tensors then need ``TRITON_INTERPRET=1``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if x.dtype != dtype:
        raise ValueError(f"input is {x.dtype} but the sparse weight is {dtype}")
    use_triton = x.is_cuda if backend == "auto" else backend == "triton"
    if not use_triton and x.dtype != torch.float32:
        raise ValueError(f"the CPU sparse kernels support float32 only, got {x.dtype}")
    return use_triton


class SparseLinear(nn.Module):
    """``nn.Linear`` with a compressed N:M or block-sparse weight.

    Example:
        >>> layer = nn.Linear(40, 24); p = Pattern.parse("block4x4")
        >>> layer.weight.data *= pattern_mask(layer.weight, p, sparsity=0.75)   # doctest: +SKIP
        >>> SparseLinear.from_dense(layer, p)(torch.randn(2, 40)).shape        # doctest: +SKIP
        torch.Size([2, 24])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pattern: Pattern,
                 backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.sparse_weight = _SparseWeight(weight, pattern)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_dense(cls, linear: nn.Linear, pattern: Pattern, backend: str = "auto") -> SparseLinear:
        """Compresses an already-masked ``linear`` (raises ``ValueError`` if it breaks the pattern)."""
        return cls(linear.weight, linear.bias, pattern, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_triton = _use_triton(x, self.backend, self.sparse_weight.values.dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {x.shape[-1]}")
        rows = x.reshape(-1, self.in_features)
        if use_triton:
            y = self.sparse_weight.rows_times_weight(rows.contiguous())
        else:
            y = self.sparse_weight.weight_times_columns(rows.t().contiguous().unsqueeze(0))[0].t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        pattern = self.sparse_weight.pattern
        return f"in_features={self.in_features}, out_features={self.out_features}, pattern={pattern}"


def conv_is_supported(conv: nn.Conv2d) -> bool:
    """Whether ``SparseConv2d`` can replace ``conv`` (dense groups, numeric zero padding)."""
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


class SparseConv2d(nn.Module):
    """``nn.Conv2d`` (groups=1) with a compressed weight: implicit GEMM on CPU, im2col + sparse
    GEMM on GPU.

    Example:
        >>> conv = nn.Conv2d(8, 16, 3, padding=1); p = Pattern.parse("stripe")
        >>> conv.weight.data *= pattern_mask(conv.weight, p, sparsity=0.5)      # doctest: +SKIP
        >>> SparseConv2d.from_dense(conv, p)(torch.randn(1, 8, 5, 5)).shape     # doctest: +SKIP
        torch.Size([1, 16, 5, 5])
    """

    def __init__(self, conv: nn.Conv2d, pattern: Pattern, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend
        if not conv_is_supported(conv):
            raise ValueError("SparseConv2d needs groups=1, zero padding and numeric padding")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.padding, self.dilation = tuple(conv.padding), tuple(conv.dilation)
        self.sparse_weight = _SparseWeight(conv.weight, pattern)
        bias = conv.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, pattern: Pattern, backend: str = "auto") -> SparseConv2d:
        """Compresses an already-masked ``conv`` (raises ``ValueError`` if it breaks the pattern)."""
        return cls(conv, pattern, backend)

    def _triton_im2col_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """GPU path: im2col in (kh, kw, C_in) column order, then the Triton sparse GEMM."""
        batch, _, height, width = x.shape
        out_h, out_w = (
            (size + 2 * pad - dil * (k - 1) - 1) // step + 1
            for size, pad, dil, k, step in zip(
                (height, width), self.padding, self.dilation, self.kernel_size, self.stride, strict=True
            )
        )
        if self._is_pointwise():
            columns = x.reshape(batch, self.in_channels, height * width)
        else:
            columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        taps = self.kernel_size[0] * self.kernel_size[1]
        rows = columns.reshape(batch, self.in_channels, taps, -1).permute(0, 3, 2, 1)
        y = self.sparse_weight.rows_times_weight(rows.reshape(-1, taps * self.in_channels).contiguous())
        return y.reshape(batch, out_h * out_w, self.out_channels).transpose(1, 2).reshape(
            batch, self.out_channels, out_h, out_w)

    def _is_pointwise(self) -> bool:
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_triton = _use_triton(x, self.backend, self.sparse_weight.values.dtype)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected [B, {self.in_channels}, H, W] input, got {tuple(x.shape)}")
        if not use_triton and self._is_pointwise():
            # A 1x1 convolution is a GEMM on the NCHW input as it lies in memory.
            batch, _, height, width = x.shape
            columns = x.contiguous().reshape(batch, self.in_channels, height * width)
            y = self.sparse_weight.weight_times_columns(columns)
            y = y.reshape(batch, self.out_channels, height, width)
        elif not use_triton:
            from toolchain.kernels.cpu.ops import ConvGeometry

            geometry = ConvGeometry(self.kernel_size, self.stride, self.padding, self.dilation)
            y = self.sparse_weight.convolve(x.contiguous(), geometry)
        else:
            y = self._triton_im2col_gemm(x)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, pattern={self.sparse_weight.pattern}")
