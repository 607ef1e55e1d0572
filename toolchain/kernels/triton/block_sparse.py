"""GPU block-sparse GEMM in Triton: ``y = x @ W.T`` with ``W`` in BSR (``BlockSparseMatrix``).

One program computes a ``BLOCK_P x R`` tile of ``y`` (``BLOCK_P`` activation rows, one
block row of ``W``) and walks only the nonzero blocks of that block row, so the work
scales with the density. Blocks of at least 16 x 16 use ``tl.dot`` (tensor cores);
smaller blocks (1 x 4, 4 x 4, stripes 1 x C_in) use a broadcast multiply-reduce.

Under ``TRITON_INTERPRET=1`` the kernel runs on CPU tensors (used by the tests); the
autotuner is skipped there and the first configuration is used.

Example:
    >>> w = torch.randn(40, 70) * block_mask(torch.randn(40, 70), (16, 16), 0.5)  # doctest: +SKIP
    >>> y = bsr_matmul(torch.randn(9, 70), BlockSparseMatrix.from_dense(w, (16, 16)))  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from toolchain.kernels.formats import BlockSparseMatrix
from toolchain.kernels.triton._operands import INTERPRET as _INTERPRET
from toolchain.kernels.triton._operands import check_operands

# Autotuned launch configurations (activation rows per program, warps, pipeline stages).
CONFIGS = [
    triton.Config({"BLOCK_P": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 128}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_P": 32}, num_warps=2, num_stages=2),
    triton.Config({"BLOCK_P": 256}, num_warps=8, num_stages=3),
]


@triton.jit
def _bsr_matmul_kernel(
    # pointers: x [P, K], values [nnz_blocks, R, C], cols int32 [nnz_blocks],
    # row_offsets int32 [n_block_rows + 1], y [P, O]
    x_ptr, values_ptr, cols_ptr, row_offsets_ptr, y_ptr,
    # sizes
    P, K, O,
    # strides (elements)
    stride_xp, stride_xk, stride_yp, stride_yo,
    # block shape and its power-of-two padding (tl.arange needs powers of two)
    R: tl.constexpr, C: tl.constexpr, R_PAD: tl.constexpr, C_PAD: tl.constexpr,
    # True: tl.dot on the block (R, C >= 16); False: broadcast multiply-reduce
    USE_DOT: tl.constexpr,
    # "ieee" for fp32 (no TF32, as cuBLAS by default), None otherwise
    INPUT_PRECISION: tl.constexpr,
    # meta-parameter (autotuned): activation rows per program
    BLOCK_P: tl.constexpr,
):
    pid_p = tl.program_id(0)
    block_row = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_r = tl.arange(0, R_PAD)
    offs_c = tl.arange(0, C_PAD)
    start = tl.load(row_offsets_ptr + block_row)
    end = tl.load(row_offsets_ptr + block_row + 1)
    acc = tl.zeros((BLOCK_P, R_PAD), dtype=tl.float32)
    w_mask = (offs_c[:, None] < C) & (offs_r[None, :] < R)
    for i in range(start, end):
        col = tl.load(cols_ptr + i)
        k = col * C + offs_c
        x = tl.load(
            x_ptr + offs_p[:, None] * stride_xp + k[None, :] * stride_xk,
            mask=(offs_p[:, None] < P) & (k[None, :] < K) & (offs_c[None, :] < C),
            other=0.0,
        )
        # W block transposed: [C_PAD, R_PAD]
        w_t = tl.load(values_ptr + i * (R * C) + offs_r[None, :] * C + offs_c[:, None],
                      mask=w_mask, other=0.0)
        if USE_DOT:
            acc = tl.dot(x, w_t, acc, input_precision=INPUT_PRECISION)
        else:
            acc += tl.sum(x[:, :, None].to(tl.float32) * w_t[None, :, :].to(tl.float32), axis=1)
    rows = block_row * R + offs_r
    y_mask = (offs_p[:, None] < P) & (offs_r[None, :] < R) & (rows[None, :] < O)
    tl.store(y_ptr + offs_p[:, None] * stride_yp + rows[None, :] * stride_yo,
             acc.to(y_ptr.dtype.element_ty), mask=y_mask)


_tuned_kernel = _bsr_matmul_kernel if _INTERPRET else triton.autotune(
    configs=CONFIGS, key=["P", "K", "O", "R", "C"])(_bsr_matmul_kernel)


def _check(x: torch.Tensor, weight: BlockSparseMatrix) -> None:
    check_operands(x, weight.values, weight.shape[1])


def bsr_matmul(x: torch.Tensor, weight: BlockSparseMatrix) -> torch.Tensor:
    """``x @ W.T`` for ``x`` ``[P, K]`` and a block-sparse ``W`` ``[O, K]``; returns ``[P, O]``."""
    _check(x, weight)
    rows, cols = weight.block
    out_features = weight.shape[0]
    n_block_rows = weight.row_offsets.numel() - 1
    y = torch.empty(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    if x.shape[0] == 0 or out_features == 0:
        return y
    meta = dict(CONFIGS[0].kwargs) if _INTERPRET else {}

    def grid(config: dict) -> tuple[int, int]:
        return (triton.cdiv(x.shape[0], config["BLOCK_P"]), n_block_rows)

    _tuned_kernel[grid](
        x, weight.values, weight.col_indices, weight.row_offsets, y,
        x.shape[0], x.shape[1], out_features,
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        R=rows, C=cols, R_PAD=triton.next_power_of_2(rows), C_PAD=triton.next_power_of_2(cols),
        USE_DOT=rows >= 16 and cols >= 16,
        INPUT_PRECISION="ieee" if x.dtype == torch.float32 else None,
        **meta,
    )
    return y


def bsr_matmul_reference(x: torch.Tensor, weight: BlockSparseMatrix) -> torch.Tensor:
    """PyTorch reference: dense ``x @ W.T`` in fp32, cast back to ``x.dtype``."""
    return (x.float() @ weight.to_dense().float().T).to(x.dtype)
