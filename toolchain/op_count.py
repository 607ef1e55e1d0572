"""Multiply-accumulates and parameters of one forward pass (Torch-Pruning's counter), without copying weights.

Torch-Pruning's `count_ops_and_params` deep-copies the model before it adds its counting hooks; for a model of
hundreds of millions of parameters that copy of the weights costs seconds of fresh memory (about 6 s for
ViT-H/14 on the 2-core development machine), twice per prune. The count needs only shapes, so a large model
is counted on a copy whose tensors live on the `meta` device (no storage, no arithmetic); a model whose forward
needs values (`.item()` on an attention mask, data-dependent control flow) falls back to the copying counter.
Both give the same numbers where both run (checked on the coverage registry's models).

>>> from torch import nn
>>> count_macs_params(nn.Linear(4, 2), torch.ones(1, 4))
(10, 10)
"""

from __future__ import annotations

import contextlib
import copy
import io

import torch
import torch_pruning as tp
from torch import nn

from toolchain.inputs import ModelInputs

# Below this many parameters the weights are copied in milliseconds: the copying counter is used as it is.
META_COUNT_MIN_PARAMS = 20_000_000


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters and buffers are storage-free meta tensors of the same shapes: its
    structure (module types, attributes, tensor shapes) without copying a weight."""
    memo: dict[int, torch.Tensor] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


def _meta_inputs(inputs):
    if isinstance(inputs, torch.Tensor):
        return torch.empty_like(inputs, device="meta")
    if isinstance(inputs, dict):
        return {key: _meta_inputs(value) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_meta_inputs(value) for value in inputs)
    return inputs


def _count(model: nn.Module, example_input: ModelInputs) -> tuple[int, int]:
    # Torch-Pruning prints a warning to stdout for models called with keyword inputs only (transformers):
    # it would corrupt `--json` output, and the batch it assumes (1) is the one example inputs have.
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def count_macs_params(model: nn.Module, example_input: ModelInputs) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass and the parameter count (Torch-Pruning's counter)."""
    was_training = model.training
    model.eval()
    try:
        if sum(p.numel() for p in model.parameters()) >= META_COUNT_MIN_PARAMS:
            try:
                return _count(meta_copy(model), _meta_inputs(example_input))
            except Exception:  # noqa: BLE001 - a forward that needs values: count on real tensors below
                pass
        return _count(model, example_input)
    finally:
        model.train(was_training)
