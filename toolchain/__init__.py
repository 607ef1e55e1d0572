"""toolchain: hardware-aware deployment for neural networks.

>>> import toolchain, torch
>>> result = toolchain.prune(toolchain.create_model("demo"), torch.randn(1, 1, 28, 28), ratio=0.5)
>>> result.manifest["macs"] < result.manifest["dense_macs"]
True
"""

from toolchain.archive import load_pruned
from toolchain.errors import ToolchainError
from toolchain.graph import ChannelGroup, PruningGraph, count_macs_params
from toolchain.models import create_model, list_models, resolve_model
from toolchain.pruning import PruneConfig, PruneResult, prune

__all__ = [
    "ChannelGroup",
    "PruneConfig",
    "PruneResult",
    "PruningGraph",
    "ToolchainError",
    "count_macs_params",
    "create_model",
    "list_models",
    "load_pruned",
    "prune",
    "resolve_model",
]
