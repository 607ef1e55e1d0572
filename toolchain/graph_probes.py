"""Samples of every module's output, so a shrink is checked inside the model as well as at its outputs.

A model's outputs can be blind to what feeds them: a classifier initialised to zero (torchvision's ViTs built
without weights) outputs zeros whatever was removed, and an output dominated by a large bias hides most of the
features' error. Every tensor whose shape the shrink leaves unchanged (a residual stream, a block's output, an
attention module's output after its heads were removed) must hold the same values in the shrunk model as in
the masked dense model, so the check compares those too, module by module, on a fixed strided sample of
each output (`SAMPLE_SIZE` values: a wrong shrink corrupts far more than one value in a thousand).

Where the shrink prunes every tensor (most CNNs), nothing inside keeps its shape, and a weight initialised to
zero (timm's `zero_init_last` BatchNorms silence every residual branch) still blinds the check. So the check
runs with such weights woken (`zero_weights_woken`): they hold ordinary values while the masked reference and
the shrunk model run, and are zeroed again afterwards. A zero tensor sliced is a zero tensor, so the model
handed back is exactly the one a shrink without waking would give.

>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
>>> with recording_module_outputs(model) as dense:
...     _ = model(torch.ones(1, 4))
>>> with recording_module_outputs(model) as same:
...     _ = model(torch.ones(1, 4))
>>> worst_module_mismatch(dense, same)
(0.0, None, 2)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from toolchain.graph_reference import relative_error
from toolchain.inputs import flatten_outputs

SAMPLE_SIZE = 4096

# name -> one entry per call of the module -> one (shape, sample) per floating-point tensor of its output
ModuleOutputs = dict[str, list[list[tuple[tuple[int, ...], torch.Tensor]]]]


def _sample(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // SAMPLE_SIZE)
    return flat[::step][:SAMPLE_SIZE].to(torch.float64, copy=True)  # a copy: a later in-place op cannot change it


@contextmanager
def recording_module_outputs(model: nn.Module) -> Iterator[ModuleOutputs]:
    """While the block runs, record a sample of each submodule's floating-point outputs, call by call."""
    records: ModuleOutputs = {}

    def hook(name: str):
        def record(_module, _inputs, output) -> None:  # returns None: the output is left as it is
            records.setdefault(name, []).append(
                [(tuple(t.shape), _sample(t)) for t in flatten_outputs(output) if t.is_floating_point()])
        return record

    with forward_hooks_on_submodules(model, hook):
        yield records


@contextmanager
def forward_hooks_on_submodules(model: nn.Module, make_hook) -> Iterator[None]:
    """While the block runs, every named submodule has the forward hook `make_hook(name)`."""
    handles = [module.register_forward_hook(make_hook(name)) for name, module in model.named_modules() if name]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def worst_module_mismatch(reference: ModuleOutputs, got: ModuleOutputs,
                          tolerance: float = float("inf")) -> tuple[float, str | None, int]:
    """(largest relative error, first module in execution order over `tolerance` or None, tensors compared).

    Only tensors of the same shape in both runs are compared: a shrunk dimension changes the shape, and a
    module the shrink removed, or one called a different number of times, is not compared.
    """
    worst, first_over, compared = 0.0, None, 0
    for name, calls in reference.items():
        got_calls = got.get(name)
        if got_calls is None or len(got_calls) != len(calls):
            continue
        for expected_call, got_call in zip(calls, got_calls, strict=True):
            if len(expected_call) != len(got_call):
                continue
            for (shape, expected), (got_shape, sample) in zip(expected_call, got_call, strict=True):
                if shape != got_shape:
                    continue
                error = relative_error(expected, sample)
                compared += 1
                worst = max(worst, error)
                if first_over is None and error > tolerance:
                    first_over = name
    return worst, first_over, compared


def _is_norm(module: nn.Module) -> bool:
    return (isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
            or "norm" in type(module).__name__.lower())


def find_zero_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(module path, module, parameter name) of every weight holding only zeros; biases are left out."""
    found = []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if ("bias" in name or not param.is_floating_point() or param.numel() == 0
                    or bool(param.detach().abs().max() != 0)):
                continue
            found.append((module_name, module, name))
    return found


def wake_weights(weights: list[tuple[str, nn.Module, str]], seed: int = 0) -> list[str]:
    """Give the listed weights ordinary values in place: norm weights 1, others N(0, 1/fan_in), seeded.
    Returns their names (`path.parameter`)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module, name in weights:
            param = getattr(module, name)
            if _is_norm(module):
                param.fill_(1.0)
            else:
                fan_in = param[0].numel() if param.dim() > 1 else param.numel()
                param.copy_(torch.randn(param.shape, generator=generator).to(param) / math.sqrt(fan_in))
    return [f"{path}.{name}" if path else name for path, _, name in weights]


@contextmanager
def zero_weights_woken(model: nn.Module) -> Iterator[list[str]]:
    """While the block runs, the model's all-zero weights hold ordinary values (`wake_weights`); afterwards
    they are zero again, at whatever shape the block left them. Yields their names.

    >>> head = nn.Linear(4, 2); _ = nn.init.zeros_(head.weight)
    >>> with zero_weights_woken(nn.Sequential(head)) as names:
    ...     awake = bool(head.weight.abs().sum() > 0)
    >>> names, awake, bool(head.weight.abs().sum() == 0)
    (['0.weight'], True, True)
    """
    weights = find_zero_weights(model)
    try:
        yield wake_weights(weights)
    finally:
        with torch.no_grad():
            for _, module, name in weights:
                param = getattr(module, name, None)
                if isinstance(param, torch.Tensor):
                    param.zero_()
