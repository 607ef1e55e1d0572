"""GPU N:M sparse GEMM in Triton: ``y = x @ W.T`` with ``W`` as ``NMSparseMatrix``.

The weight is read compressed (``n/m`` of the values plus one int8 offset each) and
expanded tile by tile in registers before a dense ``tl.dot``: the saving is weight
memory traffic (memory-bound, small-batch shapes), not tensor-core work. Triton exposes no
sparse tensor-core instruction (``mma.sp``), which PyTorch's cuSPARSELt path uses; the
benchmark compares against that path so the gap is visible.

Example:
    >>> w = torch.randn(24, 40); w = w * nm_mask(w, 2, 4)  # doctest: +SKIP
    >>> y = nm_matmul(torch.randn(5, 40), NMSparseMatrix.from_dense(w, 2, 4))  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from toolchain.kernels.formats import NMSparseMatrix
from toolchain.kernels.triton._operands import INTERPRET as _INTERPRET
from toolchain.kernels.triton._operands import check_operands

# Autotuned launch configurations (tile of activation rows x output features x K).
CONFIGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_O": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 128, "BLOCK_O": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_P": 128, "BLOCK_O": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_P": 16, "BLOCK_O": 128, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_O": 256, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]


@triton.jit
def _nm_matmul_kernel(
    # pointers: x [P, K], values [O, J], offsets int8 [O, J] (J = n_groups * N), y [P, O]
    x_ptr, values_ptr, offsets_ptr, y_ptr,
    # sizes
    P, K, O, J,
    # strides (elements)
    stride_xp, stride_xk, stride_yp, stride_yo,
    # pattern: N kept of every M along segments of SEGMENT columns (GROUPS_PER_SEGMENT groups each)
    N: tl.constexpr, M: tl.constexpr, SEGMENT, GROUPS_PER_SEGMENT,
    # "ieee" for fp32 (no TF32), None otherwise
    INPUT_PRECISION: tl.constexpr,
    # meta-parameters (autotuned)
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        x = tl.load(x_ptr + offs_p[:, None] * stride_xp + k[None, :] * stride_xk,
                    mask=(offs_p[:, None] < P) & k_ok[None, :], other=0.0)
        # group and in-group slot of every column of the tile
        in_segment = k % SEGMENT
        group = (k // SEGMENT) * GROUPS_PER_SEGMENT + in_segment // M
        slot = in_segment % M
        w_mask = k_ok[:, None] & (offs_o[None, :] < O)
        base = offs_o[None, :] * J + group[:, None] * N  # [BLOCK_K, BLOCK_O]
        w_t = tl.zeros((BLOCK_K, BLOCK_O), dtype=x.dtype)
        for j in tl.static_range(N):
            value = tl.load(values_ptr + base + j, mask=w_mask, other=0.0)
            offset = tl.load(offsets_ptr + base + j, mask=w_mask, other=-1)
            w_t = tl.where(offset.to(tl.int32) == slot[:, None], value, w_t)
        acc = tl.dot(x, w_t, acc, input_precision=INPUT_PRECISION)
    tl.store(y_ptr + offs_p[:, None] * stride_yp + offs_o[None, :] * stride_yo,
             acc.to(y_ptr.dtype.element_ty), mask=(offs_p[:, None] < P) & (offs_o[None, :] < O))


_tuned_kernel = _nm_matmul_kernel if _INTERPRET else triton.autotune(
    configs=CONFIGS, key=["P", "K", "O", "N", "M"])(_nm_matmul_kernel)


def _check(x: torch.Tensor, weight: NMSparseMatrix) -> None:
    if weight.offsets.dtype != torch.int8:
        raise ValueError(f"N:M offsets must be int8, got {weight.offsets.dtype}")
    check_operands(x, weight.values, weight.shape[1], weight.offsets)


def nm_matmul(x: torch.Tensor, weight: NMSparseMatrix) -> torch.Tensor:
    """``x @ W.T`` for ``x`` ``[P, K]`` and an N:M ``W`` ``[O, K]``; returns ``[P, O]``."""
    _check(x, weight)
    out_features = weight.shape[0]
    y = torch.empty(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    if x.shape[0] == 0 or out_features == 0:
        return y
    meta = dict(CONFIGS[0].kwargs) if _INTERPRET else {}

    def grid(config: dict) -> tuple[int, int]:
        return (triton.cdiv(x.shape[0], config["BLOCK_P"]), triton.cdiv(out_features, config["BLOCK_O"]))

    _tuned_kernel[grid](
        x, weight.values, weight.offsets, y,
        x.shape[0], x.shape[1], out_features, weight.values.shape[1],
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        N=weight.n, M=weight.m, SEGMENT=weight.segment, GROUPS_PER_SEGMENT=weight.groups_per_segment,
        INPUT_PRECISION="ieee" if x.dtype == torch.float32 else None,
        **meta,
    )
    return y


def nm_matmul_reference(x: torch.Tensor, weight: NMSparseMatrix) -> torch.Tensor:
    """PyTorch reference: dense ``x @ W.T`` in fp32, cast back to ``x.dtype``."""
    return (x.float() @ weight.to_dense().float().T).to(x.dtype)
