"""Triton kernels against their PyTorch reference: on CPU through TRITON_INTERPRET=1
(always run, small shapes), on a GPU when there is one (marked ``gpu``)."""

import pytest
import torch

from toolchain.kernels.formats import BlockSparseMatrix, NMSparseMatrix
from toolchain.kernels.patterns import block_mask, nm_mask

pytest.importorskip("triton", reason="triton is not installed")
from toolchain.kernels.triton.block_sparse import bsr_matmul, bsr_matmul_reference  # noqa: E402
from toolchain.kernels.triton.nm_sparse import nm_matmul, nm_matmul_reference  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
requires_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch)")
# Reference is computed in fp32 then cast; tolerances cover the output rounding.
TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.float16: {"rtol": 1e-2, "atol": 1e-2},
       torch.bfloat16: {"rtol": 2e-2, "atol": 5e-2}}
# The interpreter runs tl.dot through numpy, which has no bfloat16: bf16 is checked on GPU only.
INTERPRETER_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else [])


def _block_weight(shape, block, sparsity, dtype, device):
    weight = torch.randn(*shape)
    return BlockSparseMatrix.from_dense(weight * block_mask(weight, block, sparsity), block).to(device, dtype)


def _nm_weight(shape, n, m, segment, dtype, device):
    weight = torch.randn(*shape)
    return NMSparseMatrix.from_dense(weight * nm_mask(weight, n, m, segment), n, m, segment).to(device, dtype)


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
@pytest.mark.parametrize(("p", "shape", "block", "sparsity"), [
    (19, (37, 53), (4, 4), 0.6),
    (5, (20, 30), (1, 4), 0.5),
    (21, (40, 70), (16, 16), 0.5),
    (7, (11, 27), (3, 9), 0.8),
    (5, (70, 100), (32, 32), 0.5),
])
def test_bsr_matmul_matches_reference(triton_device, dtype, p, shape, block, sparsity):
    torch.manual_seed(0)
    weight = _block_weight(shape, block, sparsity, dtype, triton_device)
    x = torch.randn(p, shape[1]).to(triton_device, dtype)
    torch.testing.assert_close(bsr_matmul(x, weight), bsr_matmul_reference(x, weight), **TOL[dtype])


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
@pytest.mark.parametrize(("p", "shape", "n", "m", "segment"), [
    (19, (37, 53), 2, 4, None),
    (9, (24, 108), 2, 4, 12),
    (70, (66, 45), 1, 3, 9),
    (3, (16, 64), 4, 8, None),
])
def test_nm_matmul_matches_reference(triton_device, dtype, p, shape, n, m, segment):
    torch.manual_seed(0)
    weight = _nm_weight(shape, n, m, segment, dtype, triton_device)
    x = torch.randn(p, shape[1]).to(triton_device, dtype)
    torch.testing.assert_close(nm_matmul(x, weight), nm_matmul_reference(x, weight), **TOL[dtype])


def test_triton_wrappers_reject_malformed_inputs(triton_device):
    weight = _block_weight((8, 12), (4, 4), 0.5, torch.float32, triton_device)
    x = torch.randn(3, 12, device=triton_device)
    with pytest.raises(ValueError, match="float16 but the weight is torch.float32"):
        bsr_matmul(x.half(), weight)
    with pytest.raises(ValueError, match="contiguous"):
        bsr_matmul(torch.randn(12, 3, device=triton_device).t(), weight)
    with pytest.raises(ValueError, match="K=11"):
        bsr_matmul(torch.randn(3, 11, device=triton_device), weight)
    with pytest.raises(ValueError, match="unsupported dtype"):
        bsr_matmul(x.double(), weight)
    nm = _nm_weight((8, 12), 2, 4, None, torch.float32, triton_device)
    with pytest.raises(ValueError, match="2-D"):
        nm_matmul(x[None], nm)


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gpu_kernels_on_larger_shapes(dtype):
    torch.manual_seed(0)
    x = torch.randn(300, 1000, device="cuda", dtype=dtype)
    bsr = _block_weight((513, 1000), (16, 16), 0.9, dtype, "cuda")
    torch.testing.assert_close(bsr_matmul(x, bsr), bsr_matmul_reference(x, bsr), **TOL[dtype])
    nm = _nm_weight((513, 1000), 2, 4, None, dtype, "cuda")
    torch.testing.assert_close(nm_matmul(x, nm), nm_matmul_reference(x, nm), rtol=2e-2, atol=5e-2)
