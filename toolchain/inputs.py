"""Example inputs and model outputs of any shape: one tensor, several positional, or named inputs.

A model's example input is `ModelInputs`: a tensor (`model(x)`), a tuple (`model(*xs)`) or a dict
of named tensors (`model(**kw)`, e.g. `input_ids` and `attention_mask`). Outputs come back as any
nest of tensors, tuples, lists, dicts, dataclasses and Hugging Face `ModelOutput`s; every place that
compares, protects or exports outputs sees them through `flatten_outputs`, in one fixed order.

>>> flatten_outputs({"logits": torch.zeros(1, 2), "aux": (torch.ones(3), None)})[1].shape
torch.Size([3])
>>> call_model(torch.nn.Identity(), torch.ones(2)).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

ModelInputs = torch.Tensor | tuple | dict


def call_model(model: nn.Module, inputs: ModelInputs):
    """Run `model` on example inputs of any of the three forms."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def input_tensors(inputs: ModelInputs) -> list[torch.Tensor]:
    """The input tensors in call order (dict inputs in their insertion order)."""
    if isinstance(inputs, dict):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def input_names(inputs: ModelInputs) -> list[str]:
    """Names for the inputs: the dict's keys, else `input` / `input_0`, `input_1`, ..."""
    if isinstance(inputs, dict):
        return list(inputs)
    tensors = input_tensors(inputs)
    return ["input"] if len(tensors) == 1 else [f"input_{i}" for i in range(len(tensors))]


def batch_size(inputs: ModelInputs) -> int:
    """The leading dimension of the first input (the batch of every example input here)."""
    first = input_tensors(inputs)[0]
    return int(first.shape[0]) if first.dim() else 1


def flatten_outputs(output) -> list[torch.Tensor]:
    """Every tensor in an output nest, in a fixed order (dicts and ModelOutputs in insertion order).

    The order matches what `torch.onnx.export` produces for the same nest, so flattened PyTorch
    outputs and ONNX outputs can be compared pairwise.
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if output is None or isinstance(output, (str, bytes, int, float, bool)):
        return []
    if isinstance(output, dict):  # includes transformers' ModelOutput (an OrderedDict of non-None fields)
        return [t for value in output.values() for t in flatten_outputs(value)]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flatten_outputs(item)]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [t for f in dataclasses.fields(output) for t in flatten_outputs(getattr(output, f.name))]
    return []


def output_shapes(output) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in flatten_outputs(output)]
