"""Micro-structured sparsity patterns: N:M, blocks, stripes and weight unification.

Every pattern works on the GEMM view of a weight (``gemm_view``): a linear weight as is,
a conv weight ``[O, C_in, kh, kw]`` as ``[O, kh*kw*C_in]`` (tap-major, channel-minor, the
implicit-GEMM order of an NHWC convolution). In that view N:M groups run along the input
channels of one tap, and a stripe (one tap of one filter across all input channels,
"filter-in-filter") is a ``1 x C_in`` block.

Example:
    >>> p = Pattern.parse("2:4")
    >>> w = torch.randn(8, 16)
    >>> mask = pattern_mask(w, p, sparsity=0.5)
    >>> bool(mask.reshape(8, 4, 4).sum(-1).eq(2).all())
    True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from toolchain.kernels.formats import _grouped

KINDS = ("nm", "block", "stripe", "unify")


@dataclass(frozen=True)
class Pattern:
    """One micro-structured pattern; build it with ``Pattern.parse``.

    ``n, m`` are used by ``nm``; ``block`` (rows, cols) by ``block`` and ``unify``.
    """

    kind: str
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (1, 1)

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """``"2:4"``, ``"N:M"``, ``"block4x4"``, ``"block1x4"``, ``"stripe"``, ``"unify4x4"``."""
        spec = text.strip().lower()
        if match := re.fullmatch(r"(\d+):(\d+)", spec):
            n, m = int(match[1]), int(match[2])
            if not 0 < n < m <= 127:
                raise ValueError(f"N:M pattern needs 0 < N < M <= 127, got {text!r}")
            return cls("nm", n=n, m=m)
        if match := re.fullmatch(r"(block|unify)(\d+)x(\d+)", spec):
            rows, cols = int(match[2]), int(match[3])
            if rows < 1 or cols < 1:
                raise ValueError(f"block pattern needs a positive size, got {text!r}")
            return cls(match[1], block=(rows, cols))
        if spec == "stripe":
            return cls("stripe")
        raise ValueError(f"unknown pattern {text!r}; expected N:M, blockRxC, unifyRxC or stripe")

    @property
    def default_sparsity(self) -> float:
        """N:M fixes its own sparsity; the others default to 50 %."""
        return 1.0 - self.n / self.m if self.kind == "nm" else 0.5

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "stripe":
            return "stripe"
        return f"{self.kind}{self.block[0]}x{self.block[1]}"


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """``[O, K]`` view of a linear (2-D) or conv (4-D) weight; conv K order is (kh, kw, C_in)."""
    if weight.dim() == 2:
        return weight
    if weight.dim() == 4:
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    raise ValueError(f"expected a 2-D or 4-D weight, got shape {tuple(weight.shape)}")


def from_gemm_view(matrix: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``gemm_view`` for a weight of ``shape``."""
    if len(shape) == 2:
        return matrix.reshape(shape)
    out_ch, in_ch, kh, kw = shape
    return matrix.reshape(out_ch, kh, kw, in_ch).permute(0, 3, 1, 2).contiguous()


def segment_of(weight: torch.Tensor) -> int:
    """Length of the runs of input channels in the GEMM view (N:M groups never cross one)."""
    return weight.shape[1] if weight.dim() == 4 else weight.shape[-1]


def block_of(pattern: Pattern, weight: torch.Tensor) -> tuple[int, int]:
    """Block shape of ``pattern`` in the GEMM view of ``weight`` (a stripe is ``1 x C_in``)."""
    if pattern.kind == "stripe":
        if weight.dim() != 4:
            raise ValueError("the stripe pattern needs a conv weight")
        return (1, weight.shape[1])
    return pattern.block


def nm_mask(matrix: torch.Tensor, n: int, m: int, segment: int | None = None) -> torch.Tensor:
    """Keeps the ``n`` largest-magnitude entries of every group of ``m`` (ties: first)."""
    out_features, k = matrix.shape
    segment = k if segment is None else segment
    groups = _grouped(matrix.detach().abs().float(), m, segment)
    # -1 marks padding so that it is never preferred over a real (even zero) entry.
    pad_marker = _grouped(torch.ones_like(matrix, dtype=torch.float32), m, segment).eq(0)
    scores = groups.masked_fill(pad_marker, -1.0)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(-1, scores.topk(min(n, m), dim=-1, sorted=False).indices, True)
    keep &= ~pad_marker
    per_segment = math.ceil(segment / m)
    keep = keep.reshape(out_features, k // segment, per_segment * m)[..., :segment]
    return keep.reshape(out_features, k)


def block_scores(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """L2 norm of each ``block`` (zero padded at the edges): ``[n_block_rows, n_block_cols]``."""
    rows, cols = block
    out_features, k = matrix.shape
    padded = torch.nn.functional.pad(matrix.detach().float(), (0, -k % cols, 0, -out_features % rows))
    tiles = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return tiles.pow(2).sum(dim=(1, 3)).sqrt()


def _expand_blocks(keep: torch.Tensor, block: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    rows, cols = block
    dense = keep.repeat_interleave(rows, 0).repeat_interleave(cols, 1)
    return dense[: shape[0], : shape[1]].contiguous()


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    n_pruned = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_pruned:
        pruned = scores.flatten().argsort(stable=True)[:n_pruned]
        keep.view(-1)[pruned] = False
    return keep


def block_mask(matrix: torch.Tensor, block: tuple[int, int], sparsity: float) -> torch.Tensor:
    """Zeros the ``round(sparsity * n_blocks)`` blocks of smallest L2 norm."""
    keep = _keep_top(block_scores(matrix, block), sparsity)
    return _expand_blocks(keep, block, tuple(matrix.shape))


def unify(matrix: torch.Tensor, block: tuple[int, int], sparsity: float) -> torch.Tensor:
    """Projection onto "every block holds one shared value, a ``sparsity`` share are zero".

    The best shared value of a block is its mean; keeping it removes ``count * mean**2`` of
    squared error against zeroing it, so the blocks with the largest such gain are kept.
    """
    rows, cols = block
    out_features, k = matrix.shape
    ones = torch.ones_like(matrix, dtype=torch.float32)
    sums = block_scores_sum(matrix.detach().float(), block)
    counts = block_scores_sum(ones, block)
    means = sums / counts
    keep = _keep_top(counts * means.pow(2), sparsity)
    shared = torch.where(keep, means, torch.zeros_like(means))
    return _expand_blocks(shared, block, (out_features, k)).to(matrix.dtype)


def block_scores_sum(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Sum of the entries of each block (zero padded): ``[n_block_rows, n_block_cols]``."""
    rows, cols = block
    out_features, k = matrix.shape
    padded = torch.nn.functional.pad(matrix, (0, -k % cols, 0, -out_features % rows))
    return padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols).sum(dim=(1, 3))


def pattern_mask(weight: torch.Tensor, pattern: Pattern, sparsity: float | None = None) -> torch.Tensor:
    """Magnitude mask of ``weight`` (own shape) for ``pattern`` (``unify``: its zero blocks)."""
    matrix = gemm_view(weight)
    if pattern.kind == "nm":
        keep = nm_mask(matrix, pattern.n, pattern.m, segment_of(weight))
    else:
        sparsity = pattern.default_sparsity if sparsity is None else sparsity
        keep = block_mask(matrix, block_of(pattern, weight), sparsity)
    return from_gemm_view(keep, weight.shape)


def project(weight: torch.Tensor, pattern: Pattern, sparsity: float | None = None) -> torch.Tensor:
    """Euclidean projection of ``weight`` onto the pattern's set (the ADMM Z-step)."""
    if pattern.kind == "unify":
        sparsity = pattern.default_sparsity if sparsity is None else sparsity
        return from_gemm_view(unify(gemm_view(weight), pattern.block, sparsity), weight.shape)
    return weight * pattern_mask(weight, pattern, sparsity)


def follows(weight: torch.Tensor, pattern: Pattern) -> bool:
    """Whether ``weight`` already lies in the pattern's set (any sparsity)."""
    matrix = gemm_view(weight)
    if pattern.kind == "nm":
        groups = _grouped(matrix, pattern.m, segment_of(weight))
        return bool(groups.ne(0).sum(-1).le(pattern.n).all())
    block = block_of(pattern, weight)
    if pattern.kind != "unify":
        return True  # any zero layout is a (possibly denser) block pattern
    rows, cols = block
    counts = block_scores_sum(torch.ones_like(matrix, dtype=torch.float32), block)
    means = block_scores_sum(matrix.float(), block) / counts
    expected = _expand_blocks(means, block, tuple(matrix.shape))
    return bool(torch.allclose(matrix.float(), expected, rtol=0, atol=1e-6))
