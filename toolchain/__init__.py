"""toolchain: hardware-aware deployment for neural networks.

>>> import toolchain, torch
>>> result = toolchain.prune(toolchain.create_model("demo"), torch.randn(1, 1, 28, 28), ratio=0.5)
>>> result.manifest["macs"] < result.manifest["dense_macs"]
True

Pruning under a latency budget measured on a target: `prune_to_budget` with a `BudgetConfig` (the
predictor from `load_predictor`, or found or built by `BudgetJob`) on a `Target`; the whole pipeline to a deploy
bundle: `deploy`. Each public name's docstring has a worked example (tests/test_public_api.py runs them).
"""

import importlib

from toolchain.allocate import BudgetConfig
from toolchain.archive import load_pruned
from toolchain.errors import ToolchainError
from toolchain.graph import ChannelGroup, PruningGraph
from toolchain.models import create_model, list_models, resolve_model
from toolchain.op_count import count_macs_params
from toolchain.pruning import PruneConfig, PruneResult, prune
from toolchain.targets import Target

# Imported on first use: the budget loop and the latency package (predictors, campaign, scipy) add ~1.8 s to
# `import toolchain`, which ratio pruning and `load_pruned` never need.
_ON_USE = {"prune_to_budget": "toolchain.budget", "deploy": "toolchain.deployment",
           "RecoveryConfig": "toolchain.recover",  # the function stays toolchain.recover.recover (module name)
           **dict.fromkeys(("list_predictors", "load_predictor", "predict"), "toolchain.latency")}


def __getattr__(name: str):
    if name not in _ON_USE:
        raise AttributeError(f"module 'toolchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(_ON_USE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    # ratio pruning and the model zoo
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
    # latency budgets on a target, and deployment
    "BudgetConfig",
    "Target",
    "deploy",
    "list_predictors",
    "load_predictor",
    "predict",
    "prune_to_budget",
    # recovery of a pruned model (distillation from the dense one): deploy(..., recovery=RecoveryConfig(...))
    "RecoveryConfig",
]
