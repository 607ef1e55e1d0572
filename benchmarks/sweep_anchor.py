"""The sweep's external anchor: Torch-Pruning's own global pruner, stepped until the same measured latency.

`BasePruner(global_pruning=True)` with `MagnitudeImportance` (L2) or `TaylorImportance` removes channels in
`steps` equal increments of the global pruning ratio; after each increment the model is timed with the same
measurement the toolchain's budget search uses (and, like the search, a model timed over the next budget is
timed once more and counts by the lower timing). The first model at or under each budget is copied, recovered
with the same `toolchain.recover.recover` and `RecoveryConfig` as the toolchain's points, and becomes a row.
Torch-Pruning does its own surgery here; only the classifier (the last Linear) is kept whole.

>>> rows = run_anchor(dense, x, data, AnchorConfig("magnitude"), (0.5, 0.7), dense_ms, measurer)  # doctest: +SKIP
>>> [r["method"] for r in rows]                                                                   # doctest: +SKIP
['tp-magnitude', 'tp-magnitude']
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from toolchain.op_count import count_macs_params
from toolchain.recover import RecoveryConfig, recover

IMPORTANCES = {"magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
               "taylor": lambda: tp.importance.TaylorImportance()}


@dataclass(frozen=True)
class AnchorConfig:
    importance: str  # a key of IMPORTANCES
    max_ratio: float = 0.9  # global pruning ratio reached at the last step
    steps: int = 30  # increments of the ratio (each one timed): 3 % of the channels per step
    finetune_steps: int = 0  # the same fixed-step recovery the toolchain's points get
    taylor_batches: int = 2  # calibration batches (of 100) whose loss gradient Taylor importance reads
    # Per-layer cap (Torch-Pruning's max_pruning_ratio): the toolchain's allocators keep at least
    # `AllocationConfig.min_keep_ratio` = 0.1 of every group, so the anchor may not prune a layer further either
    # (uncapped, global magnitude emptied whole layers of the demo and the comparison said nothing about allocation).
    # Torch-Pruning checks the cap before each step, so a layer can end one step's share under it.
    layer_max_ratio: float = 0.9
    # Kept channels are multiples of this (Torch-Pruning's round_to), as the toolchain's `BudgetConfig.round_to`:
    # without it, MobileNetV2 pruned 3 % by Torch-Pruning measured 1.58 ms on onnxruntime against 0.30 ms dense
    # (odd channel counts fall off the fast kernels), so the anchor reached no budget at all.
    round_to: int | None = 8


def method_name(config: AnchorConfig) -> str:
    return f"tp-{config.importance}"


def _accumulate_gradients(model: nn.Module, calib, batches: int) -> None:
    """Loss gradients on calibration batches for TaylorImportance (eval mode: BN statistics stay put)."""
    model.eval()
    model.zero_grad()
    for i, (inputs, labels) in enumerate(DataLoader(calib, batch_size=100)):
        if i >= batches:
            break
        nn.functional.cross_entropy(model(inputs), labels).backward()


def _classifier(model: nn.Module) -> list[nn.Module]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def run_anchor(dense: nn.Module, example_input: torch.Tensor, data, config: AnchorConfig,
               budget_ratios: tuple[float, ...], dense_ms: float, measurer: Callable[[nn.Module, torch.Tensor], float],
               step: Callable[[str], None] = lambda _: None) -> list[dict]:
    """One row per budget ratio: Torch-Pruning's first model at or under the budget, recovered; a row with an
    `error` for budgets the largest ratio does not reach."""
    model = copy.deepcopy(dense).eval()
    pruner = tp.pruner.BasePruner(model, example_input, importance=IMPORTANCES[config.importance](),
                                  global_pruning=True, pruning_ratio=config.max_ratio,
                                  max_pruning_ratio=config.layer_max_ratio, round_to=config.round_to,
                                  iterative_steps=config.steps, ignored_layers=_classifier(model))
    pending = sorted(budget_ratios, reverse=True)
    rows, timings = [], []
    start_s = time.perf_counter()
    for index in range(1, config.steps + 1):
        if not pending:
            break
        if config.importance == "taylor":
            _accumulate_gradients(model, data.calib, config.taylor_batches)
        pruner.step()
        model.zero_grad()
        measured_ms = measurer(model, example_input)
        if measured_ms > pending[0] * dense_ms:  # the budget search's rule: over budget is timed once more
            measured_ms = min(measured_ms, measurer(model, example_input))
        timings.append(round(measured_ms, 4))
        while pending and measured_ms <= pending[0] * dense_ms:
            budget_ratio = pending.pop(0)
            step(f"{method_name(config)}: step {index} measured {measured_ms:.3f} ms, under {budget_ratio:g} x dense")
            rows.append(_recovered_row(model, dense, example_input, data, config, budget_ratio, dense_ms,
                                       measured_ms, index, timings, start_s))
    for budget_ratio in pending:
        rows.append({"method": method_name(config), "budget_ratio": budget_ratio, "dense_latency_ms": dense_ms,
                     "error": f"not reached at global ratio {config.max_ratio}", "timings_ms": timings})
    return rows


def _recovered_row(model: nn.Module, dense: nn.Module, example_input: torch.Tensor, data, config: AnchorConfig,
                   budget_ratio: float, dense_ms: float, measured_ms: float, index: int, timings: list[float],
                   start_s: float) -> dict:
    pruned = copy.deepcopy(model)
    done = recover(pruned, dense, data, RecoveryConfig(finetune_steps=config.finetune_steps))
    macs, params = count_macs_params(pruned, example_input)
    return {"method": method_name(config), "budget_ratio": budget_ratio, "budget_ms": budget_ratio * dense_ms,
            "measured_latency_ms": measured_ms, "dense_latency_ms": dense_ms,
            "global_ratio": round(config.max_ratio * index / config.steps, 4), "tp_step": index,
            "layer_max_ratio": config.layer_max_ratio, "round_to": config.round_to, "macs": macs,
            "params": params, "dense_accuracy": done["dense_accuracy"],
            "accuracy_after_bn_recalibration": done["accuracy_after_bn_recalibration"],
            "accuracy_finetuned": done["accuracy"] if config.finetune_steps else None,
            "finetune_steps": config.finetune_steps, "timings_ms": list(timings),
            "point_s": round(time.perf_counter() - start_s, 2), "error": None}
