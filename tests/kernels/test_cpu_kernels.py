"""Edge-CPU C++ kernels against their PyTorch reference (the extension builds once, cached in build/)."""

import pytest
import torch

from toolchain.kernels.cpu import ops
from toolchain.kernels.formats import BlockSparseMatrix, NMSparseMatrix
from toolchain.kernels.patterns import block_mask, nm_mask

TOL = {"rtol": 1e-4, "atol": 1e-4}  # fp32, K <= ~300: reordered sums only


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    ops.extension()


@pytest.mark.parametrize(("out_features", "k", "length"),
                         [(37, 53, 29), (8, 16, 16), (70, 130, 50), (5, 3, 1)])
@pytest.mark.parametrize("block", [(1, 4), (4, 4), (16, 16), (3, 5)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_bsr_gemm_matches_reference(out_features, k, length, block, sparsity):
    torch.manual_seed(0)
    weight = torch.randn(out_features, k)
    weight = weight * block_mask(weight, block, sparsity)
    x = torch.randn(2, k, length)
    got = ops.bsr_gemm(BlockSparseMatrix.from_dense(weight, block), x)
    torch.testing.assert_close(got, ops.reference_gemm(weight, x), **TOL)


def test_bsr_gemm_with_a_long_k_crosses_packing_chunks():
    torch.manual_seed(0)
    weight = torch.randn(9, 700)
    weight = weight * block_mask(weight, (4, 4), 0.7)
    x = torch.randn(1, 700, 20)
    torch.testing.assert_close(ops.bsr_gemm(BlockSparseMatrix.from_dense(weight, (4, 4)), x),
                               ops.reference_gemm(weight, x), rtol=1e-4, atol=5e-4)


# (C_in, C_out, H, W, geometry): odd sizes, strides, padding, dilation, a 1x1 and a 1x3.
CONV_CASES = [
    (5, 7, 9, 11, ops.ConvGeometry((3, 3), (1, 1), (1, 1))),
    (12, 10, 8, 7, ops.ConvGeometry((3, 3), (2, 2), (1, 1))),
    (6, 9, 10, 10, ops.ConvGeometry((3, 3), (1, 2), (2, 0), (2, 1))),
    (20, 13, 5, 6, ops.ConvGeometry((1, 1))),
    (4, 8, 6, 30, ops.ConvGeometry((1, 3), (1, 1), (0, 1))),
]


@pytest.mark.parametrize(("c_in", "c_out", "height", "width", "geometry"), CONV_CASES)
@pytest.mark.parametrize("block", [(4, 4), (1, 3), (2, 5)])
def test_bsr_conv2d_matches_reference(c_in, c_out, height, width, geometry, block):
    torch.manual_seed(0)
    k = c_in * geometry.kernel_size[0] * geometry.kernel_size[1]
    matrix = torch.randn(c_out, k)
    matrix = matrix * block_mask(matrix, block, 0.5)
    x = torch.randn(2, c_in, height, width)
    got = ops.bsr_conv2d(BlockSparseMatrix.from_dense(matrix, block), x, geometry)
    torch.testing.assert_close(got, ops.reference_conv2d(matrix, x, geometry), **TOL)


@pytest.mark.parametrize(("c_in", "c_out", "height", "width", "geometry"), CONV_CASES)
def test_nm_conv2d_matches_reference(c_in, c_out, height, width, geometry):
    torch.manual_seed(0)
    taps = geometry.kernel_size[0] * geometry.kernel_size[1]
    matrix = torch.randn(c_out, c_in * taps)
    matrix = matrix * nm_mask(matrix, 2, 4, segment=c_in)
    compressed = NMSparseMatrix.from_dense(matrix, 2, 4, segment=c_in)
    x = torch.randn(2, c_in, height, width)
    got = ops.nm_conv2d(compressed.values, compressed.column_indices(), x, geometry)
    torch.testing.assert_close(got, ops.reference_conv2d(matrix, x, geometry), **TOL)


@pytest.mark.parametrize(("out_features", "k", "length"), [(37, 53, 29), (4, 8, 16), (70, 130, 50)])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8)])
def test_nm_gemm_matches_reference(out_features, k, length, n, m):
    torch.manual_seed(0)
    weight = torch.randn(out_features, k)
    weight = weight * nm_mask(weight, n, m)
    x = torch.randn(3, k, length)
    got = ops.nm_sparse_gemm(NMSparseMatrix.from_dense(weight, n, m), x)
    torch.testing.assert_close(got, ops.reference_gemm(weight, x), **TOL)


def _bsr() -> BlockSparseMatrix:
    return BlockSparseMatrix.from_dense(torch.randn(8, 12), (4, 4))


def test_cpu_kernels_reject_malformed_inputs():
    with pytest.raises(ValueError, match="float32 only"):
        ops.bsr_gemm(_bsr(), torch.randn(1, 12, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        ops.bsr_gemm(_bsr(), torch.randn(1, 5, 12).transpose(1, 2))
    with pytest.raises(ValueError, match="K=11"):
        ops.bsr_gemm(_bsr(), torch.randn(1, 11, 5))
    with pytest.raises(ValueError, match=r"\[B, K, L\]"):
        ops.bsr_gemm(_bsr(), torch.randn(12, 5))
    with pytest.raises(ValueError, match="3 channels but the weight expects K=12"):
        ops.bsr_conv2d(_bsr(), torch.randn(1, 3, 5, 5), ops.ConvGeometry((3, 3)))
    with pytest.raises(ValueError, match="contiguous"):
        ops.bsr_conv2d(_bsr(), torch.randn(1, 5, 5, 12).permute(0, 3, 1, 2), ops.ConvGeometry((1, 1)))
    nm = NMSparseMatrix.from_dense(torch.zeros(4, 8), 2, 4)
    with pytest.raises(ValueError, match="int32"):
        ops.nm_gemm(nm.values, nm.column_indices().long(), torch.randn(1, 8, 3))
    with pytest.raises(ValueError, match="out of range"):
        ops.nm_gemm(nm.values, nm.column_indices() + 8, torch.randn(1, 8, 3))
