"""Micro-structured sparsity: patterns, ADMM training, sparse kernels and the module swap.

Public entry points (Triton is imported only when a CUDA tensor reaches a sparse module):

    >>> from toolchain.kernels import SparsifyConfig, sparsify_
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32))     # doctest: +SKIP
    >>> sparsify_(model, SparsifyConfig(pattern="block4x4", sparsity=0.8))   # doctest: +SKIP
    ['0']
"""

from toolchain.kernels.admm import AdmmConfig, admm_train_
from toolchain.kernels.modules import SparseConv2d, SparseLinear
from toolchain.kernels.patterns import Pattern
from toolchain.kernels.sparsify import SparsifyConfig, sparsify_

__all__ = [
    "AdmmConfig",
    "Pattern",
    "SparseConv2d",
    "SparseLinear",
    "SparsifyConfig",
    "admm_train_",
    "sparsify_",
]
