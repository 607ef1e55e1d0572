"""Compressed storage for micro-structured sparse weight matrices.

A weight is handled in its GEMM view: a ``[out_features, K]`` matrix (see
``toolchain.kernels.patterns.gemm_view``). Two formats cover every pattern:

- ``BlockSparseMatrix`` (BSR): nonzero ``R x C`` blocks, for block sparsity, stripes
  (``1 x C_in`` blocks in the conv view) and unified blocks.
- ``NMSparseMatrix``: per group of ``m`` consecutive columns, ``n`` kept values plus their
  in-group offsets (int8 metadata), for N:M sparsity.

Edges that are not multiples of the block (or group) size are handled by zero padding
inside the format; the dense shape is kept in ``shape``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _check_matrix(matrix: torch.Tensor) -> None:
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got {getattr(matrix, 'shape', type(matrix))}")
    if not matrix.is_floating_point():
        raise ValueError(f"expected a floating-point weight matrix, got {matrix.dtype}")


@dataclass(frozen=True, eq=False)
class BlockSparseMatrix:
    """Block-sparse (BSR) matrix: ``values[i]`` is the ``R x C`` block at block row ``r``
    (``row_offsets[r] <= i < row_offsets[r + 1]``) and block column ``col_indices[i]``.

    Example:
        >>> w = torch.zeros(5, 6); w[:4, 4:6] = 1.0
        >>> bsr = BlockSparseMatrix.from_dense(w, (4, 2))
        >>> bsr.values.shape, bsr.col_indices.tolist(), bsr.row_offsets.tolist()
        (torch.Size([1, 4, 2]), [2], [0, 1, 1])
    """

    values: torch.Tensor  # [nnz_blocks, R, C], the weight dtype
    col_indices: torch.Tensor  # int32 [nnz_blocks]
    row_offsets: torch.Tensor  # int32 [n_block_rows + 1]
    shape: tuple[int, int]  # dense (out_features, K)
    block: tuple[int, int]  # (R, C)

    @classmethod
    def from_dense(cls, matrix: torch.Tensor, block: tuple[int, int]) -> BlockSparseMatrix:
        """Keeps every block holding at least one nonzero."""
        _check_matrix(matrix)
        rows, cols = block
        if rows < 1 or cols < 1:
            raise ValueError(f"block must be positive, got {block}")
        out_features, k = matrix.shape
        n_block_rows, n_block_cols = math.ceil(out_features / rows), math.ceil(k / cols)
        padded = matrix.new_zeros(n_block_rows * rows, n_block_cols * cols)
        padded[:out_features, :k] = matrix
        tiles = padded.reshape(n_block_rows, rows, n_block_cols, cols).transpose(1, 2)
        keep = tiles.ne(0).any(dim=(2, 3))  # [n_block_rows, n_block_cols]
        block_row, block_col = keep.nonzero(as_tuple=True)
        counts = keep.sum(dim=1)
        row_offsets = torch.zeros(n_block_rows + 1, dtype=torch.int32, device=matrix.device)
        row_offsets[1:] = counts.cumsum(0).to(torch.int32)
        return cls(
            values=tiles[block_row, block_col].contiguous(),
            col_indices=block_col.to(torch.int32).contiguous(),
            row_offsets=row_offsets,
            shape=(out_features, k),
            block=(rows, cols),
        )

    @property
    def density(self) -> float:
        """Share of the (padded) blocks stored."""
        n_block_rows = self.row_offsets.numel() - 1
        n_block_cols = math.ceil(self.shape[1] / self.block[1])
        return self.values.shape[0] / max(n_block_rows * n_block_cols, 1)

    def block_rows(self) -> torch.Tensor:
        """Block-row index of every stored block (int64 ``[nnz_blocks]``)."""
        counts = (self.row_offsets[1:] - self.row_offsets[:-1]).long()
        return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)

    def to_dense(self) -> torch.Tensor:
        rows, cols = self.block
        out_features, k = self.shape
        n_block_rows = self.row_offsets.numel() - 1
        n_block_cols = math.ceil(k / cols)
        tiles = torch.zeros(n_block_rows, n_block_cols, rows, cols, dtype=self.values.dtype,
                            device=self.values.device)
        tiles[self.block_rows(), self.col_indices.long()] = self.values
        dense = tiles.transpose(1, 2).reshape(n_block_rows * rows, n_block_cols * cols)
        return dense[:out_features, :k].contiguous()

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> BlockSparseMatrix:
        return BlockSparseMatrix(self.values.to(device=device, dtype=dtype), self.col_indices.to(device),
                                 self.row_offsets.to(device), self.shape, self.block)


@dataclass(frozen=True, eq=False)
class NMSparseMatrix:
    """N:M sparse matrix: in every group of ``m`` consecutive columns at most ``n`` nonzeros.

    Columns are split into segments of ``segment`` columns (the input channels of one conv
    tap, or all of K for a linear layer) and each segment into groups of ``m``; a short
    last group is allowed. ``values[o, g*n + j]`` sits at column ``group_start(g) +
    offsets[o, g*n + j]``; unused slots hold value 0.

    Example:
        >>> w = torch.tensor([[0.0, 3.0, 0.0, -1.0, 2.0, 0.0]])
        >>> nm = NMSparseMatrix.from_dense(w, n=2, m=4)
        >>> nm.values.tolist(), nm.offsets.tolist()
        ([[3.0, -1.0, 2.0, 0.0]], [[1, 3, 0, 1]])
    """

    values: torch.Tensor  # [out_features, n_groups * n], the weight dtype
    offsets: torch.Tensor  # int8 [out_features, n_groups * n], column offset inside the group
    shape: tuple[int, int]
    n: int
    m: int
    segment: int

    @classmethod
    def from_dense(cls, matrix: torch.Tensor, n: int, m: int, segment: int | None = None) -> NMSparseMatrix:
        """Compresses ``matrix``; raises ``ValueError`` if a group holds more than ``n`` nonzeros."""
        _check_matrix(matrix)
        out_features, k = matrix.shape
        segment = k if segment is None else segment
        if not 0 < n <= m <= 127:
            raise ValueError(f"need 0 < n <= m <= 127, got {n}:{m}")
        if segment < 1 or k % segment:
            raise ValueError(f"segment {segment} must divide K={k}")
        groups = _grouped(matrix, m, segment)  # [O, G, m], zero padded
        nonzero = groups.ne(0)
        worst = int(nonzero.sum(-1).max()) if nonzero.numel() else 0
        if worst > n:
            raise ValueError(f"weight does not follow the {n}:{m} pattern: a group has {worst} nonzeros")
        # Stable order: nonzeros first (by position), then filler slots, keep the first n.
        key = (~nonzero).to(torch.int64) * m + torch.arange(m, device=matrix.device)
        order = key.argsort(dim=-1)[..., :n]
        values = groups.gather(-1, order)
        return cls(values=values.reshape(out_features, -1).contiguous(),
                   offsets=order.to(torch.int8).reshape(out_features, -1).contiguous(),
                   shape=(out_features, k), n=n, m=m, segment=segment)

    @property
    def groups_per_segment(self) -> int:
        return math.ceil(self.segment / self.m)

    def column_indices(self) -> torch.Tensor:
        """Absolute column of every stored value (int32, same shape as ``values``)."""
        n_groups = self.values.shape[1] // self.n
        group = torch.arange(n_groups, device=self.values.device)
        start = (group // self.groups_per_segment) * self.segment + (group % self.groups_per_segment) * self.m
        columns = start.repeat_interleave(self.n)[None, :] + self.offsets.long()
        # Filler slots of a short last group may point past the segment: clamp to a real column.
        segment_end = (group // self.groups_per_segment + 1).repeat_interleave(self.n) * self.segment
        return torch.minimum(columns, segment_end[None, :] - 1).to(torch.int32).contiguous()

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        dense.scatter_add_(1, self.column_indices().long(), self.values)
        return dense

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> NMSparseMatrix:
        return NMSparseMatrix(self.values.to(device=device, dtype=dtype), self.offsets.to(device),
                              self.shape, self.n, self.m, self.segment)


def _grouped(matrix: torch.Tensor, m: int, segment: int) -> torch.Tensor:
    """``[O, K]`` → ``[O, n_groups, m]`` with each segment zero-padded to a multiple of ``m``."""
    out_features, k = matrix.shape
    per_segment = math.ceil(segment / m)
    segments = matrix.reshape(out_features, k // segment, segment)
    pad = per_segment * m - segment
    if pad:
        segments = torch.nn.functional.pad(segments, (0, pad))
    return segments.reshape(out_features, (k // segment) * per_segment, m)
