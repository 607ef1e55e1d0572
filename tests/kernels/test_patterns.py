import pytest
import torch

from toolchain.kernels.formats import BlockSparseMatrix, NMSparseMatrix
from toolchain.kernels.patterns import (
    Pattern,
    block_mask,
    follows,
    from_gemm_view,
    gemm_view,
    nm_mask,
    pattern_mask,
    project,
    unify,
)


@pytest.mark.parametrize(("text", "kind"), [
    ("2:4", "nm"), ("1:8", "nm"), ("block4x4", "block"), ("block1x4", "block"), ("stripe", "stripe"),
    ("unify4x4", "unify"),
])
def test_parse_round_trips(text, kind):
    pattern = Pattern.parse(text)
    assert pattern.kind == kind
    assert str(pattern) == text


@pytest.mark.parametrize("text", ["4:2", "0:4", "block0x4", "blocky", "2-4", ""])
def test_parse_rejects_bad_patterns(text):
    with pytest.raises(ValueError, match="pattern"):
        Pattern.parse(text)


def test_gemm_view_is_tap_major_and_invertible():
    weight = torch.randn(5, 3, 2, 2)
    matrix = gemm_view(weight)
    assert matrix.shape == (5, 12)
    torch.testing.assert_close(matrix[:, 3:6], weight[:, :, 0, 1], rtol=0, atol=0)
    torch.testing.assert_close(from_gemm_view(matrix, weight.shape), weight, rtol=0, atol=0)


@pytest.mark.parametrize(("n", "m", "k"), [(2, 4, 16), (2, 4, 13), (1, 3, 10), (3, 8, 21)])
def test_nm_mask_keeps_the_n_largest_of_every_group(n, m, k):
    torch.manual_seed(0)
    matrix = torch.randn(7, k)
    keep = nm_mask(matrix, n, m)
    full_groups = (k // m) * m
    groups = keep[:, :full_groups].reshape(7, -1, m)
    assert bool(groups.sum(-1).eq(n).all())
    kept_min = torch.where(groups, matrix[:, :full_groups].abs().reshape(7, -1, m), torch.inf).amin(-1)
    dropped_max = torch.where(~groups, matrix[:, :full_groups].abs().reshape(7, -1, m), -1.0).amax(-1)
    assert bool((kept_min >= dropped_max).all())
    assert int(keep[:, full_groups:].sum(-1).max()) <= n


def test_nm_groups_of_a_conv_stay_inside_one_tap():
    torch.manual_seed(0)
    weight = torch.randn(4, 6, 3, 3)  # C_in = 6 is not a multiple of 4
    masked = project(weight, Pattern.parse("2:4"))
    per_tap = masked.permute(0, 2, 3, 1).reshape(4, 9, 6)
    assert bool(per_tap[..., :4].ne(0).sum(-1).eq(2).all())
    assert bool(per_tap[..., 4:].ne(0).sum(-1).le(2).all())
    assert follows(masked, Pattern.parse("2:4"))


@pytest.mark.parametrize(("block", "shape"), [((4, 4), (10, 18)), ((1, 4), (7, 9)), ((16, 16), (33, 40))])
@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_block_mask_zeros_the_weakest_blocks(block, shape, sparsity):
    torch.manual_seed(0)
    matrix = torch.randn(*shape)
    keep = block_mask(matrix, block, sparsity)
    n_blocks = -(-shape[0] // block[0]) * -(-shape[1] // block[1])
    bsr = BlockSparseMatrix.from_dense(matrix * keep, block)
    assert bsr.values.shape[0] == n_blocks - round(sparsity * n_blocks)


def test_stripe_mask_prunes_whole_taps_of_a_filter():
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 3, 3)
    keep = pattern_mask(weight, Pattern.parse("stripe"), sparsity=0.5)
    per_stripe = keep.permute(0, 2, 3, 1).reshape(6 * 9, 5)
    assert bool((per_stripe.all(1) | ~per_stripe.any(1)).all())
    assert int(per_stripe.all(1).sum()) == 6 * 9 - round(0.5 * 6 * 9)


def test_unify_shares_one_value_per_block_and_is_the_best_such_projection():
    torch.manual_seed(0)
    matrix = torch.randn(6, 10)
    unified = unify(matrix, (2, 4), sparsity=0.5)
    assert follows(unified, Pattern.parse("unify2x4"))
    blocks = torch.nn.functional.pad(unified, (0, 2)).reshape(3, 2, 3, 4)
    assert int(blocks.ne(0).any(dim=(1, 3)).sum()) == 9 - round(0.5 * 9)
    # The mean is the best single value: perturbing a kept value can only increase the error.
    error = (matrix - unified).pow(2).sum()
    nudged = unified.clone()
    nudged[unified.ne(0)] += 0.01
    assert (matrix - nudged).pow(2).sum() > error


@pytest.mark.parametrize(("shape", "block"), [((9, 14), (4, 4)), ((5, 7), (1, 3)), ((17, 33), (16, 16))])
def test_block_sparse_format_round_trips(shape, block):
    torch.manual_seed(0)
    matrix = torch.randn(*shape) * block_mask(torch.randn(*shape), block, 0.6)
    torch.testing.assert_close(BlockSparseMatrix.from_dense(matrix, block).to_dense(), matrix, rtol=0, atol=0)


@pytest.mark.parametrize(("n", "m", "k", "segment"), [(2, 4, 13, None), (2, 4, 18, 6), (1, 3, 10, None)])
def test_nm_format_round_trips(n, m, k, segment):
    torch.manual_seed(0)
    matrix = torch.randn(5, k)
    matrix = matrix * nm_mask(matrix, n, m, segment)
    compressed = NMSparseMatrix.from_dense(matrix, n, m, segment)
    assert compressed.offsets.dtype == torch.int8
    torch.testing.assert_close(compressed.to_dense(), matrix, rtol=0, atol=0)


def test_nm_format_rejects_a_weight_that_breaks_the_pattern():
    with pytest.raises(ValueError, match="does not follow the 2:4 pattern"):
        NMSparseMatrix.from_dense(torch.ones(2, 8), 2, 4)


def test_formats_reject_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        BlockSparseMatrix.from_dense(torch.ones(2, 3, 4), (2, 2))
    with pytest.raises(ValueError, match="floating-point"):
        NMSparseMatrix.from_dense(torch.ones(2, 8, dtype=torch.int64), 2, 4)
