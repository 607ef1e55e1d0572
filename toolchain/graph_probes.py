"""Samples of every module's output, so a shrink is checked inside the model as well as at its outputs.

A model's outputs can be blind to what feeds them: a classifier initialised to zero (torchvision's ViTs built
without weights) outputs zeros whatever was removed, and an output dominated by a large bias hides most of the
features' error. Every tensor whose shape the shrink leaves unchanged (a residual stream, a block's output, an
attention module's output after its heads were removed) must hold the same values in the shrunk model as in
the masked dense model, so the check compares those too, module by module, on a fixed strided sample of
each output (`SAMPLE_SIZE` values: a wrong shrink corrupts far more than one value in a thousand).

A tensor the shrink narrows is compared too: the reference's sample is taken from the channels the shrink
keeps (`narrowed_outputs` says which module outputs lose which channels along which dim), so a convolution or
a linear layer whose channels were removed must output exactly the masked dense model's kept channels. Without
this, a CNN whose every tensor is pruned would be checked at its outputs alone, and an output that does not
depend on the input (torchvision's GoogLeNet built without weights: the features vanish through its small
initial weights, and the logits are the classifier's bias) would pass any shrink.

A weight initialised to zero (timm's `zero_init_last` BatchNorms silence every residual branch) still blinds
the outputs downstream of it. So the check runs with such weights woken (`zero_weights_woken`): they hold
ordinary values while the masked reference and the shrunk model run, and are zeroed again afterwards. A zero
tensor sliced is a zero tensor, so the model handed back is exactly the one a shrink without waking would give.

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

from toolchain.graph_reference import is_channel_norm, norm_channel_dim, relative_error
from toolchain.inputs import flatten_outputs

SAMPLE_SIZE = 4096
# A reference tensor whose largest value is under this has vanished into float32's subnormal range (a model
# built without weights can shrink its signal layer after layer): it holds no relative precision to compare.
VANISHED = 1e-30

# name -> one entry per call of the module -> one (shape, sample) per floating-point tensor of its output
ModuleOutputs = dict[str, list[list[tuple[tuple[int, ...], torch.Tensor]]]]


def _sample(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // SAMPLE_SIZE)
    return flat[::step][:SAMPLE_SIZE].to(torch.float64, copy=True)  # a copy: a later in-place op cannot change it


# module path -> (dim, dense size along it, channels the shrink removes there)
NarrowedOutputs = dict[str, tuple[int, int, set[int]]]


def _kept(tensor: torch.Tensor, narrowed: tuple[int, int, set[int]] | None) -> torch.Tensor:
    """The tensor's kept channels, if it is one the shrink narrows (its dense size along the dim)."""
    if narrowed is None:
        return tensor
    dim, size, dropped = narrowed
    if tensor.dim() == 0 or not -tensor.dim() <= dim < tensor.dim() or tensor.shape[dim] != size:
        return tensor
    keep = torch.tensor([c for c in range(size) if c not in dropped], dtype=torch.long, device=tensor.device)
    return tensor.index_select(dim, keep)


@contextmanager
def recording_module_outputs(model: nn.Module, narrowed: NarrowedOutputs | None = None) -> Iterator[ModuleOutputs]:
    """While the block runs, record a sample of each submodule's floating-point outputs, call by call.

    `narrowed` (for the reference run): sample only the kept channels of those modules' outputs, so the
    samples line up with the shrunk model's.
    """
    records: ModuleOutputs = {}
    narrowed = narrowed or {}

    def hook(name: str):
        def record(_module, _inputs, output) -> None:  # returns None: the output is left as it is
            tensors = [_kept(t, narrowed.get(name)) for t in flatten_outputs(output) if t.is_floating_point()]
            records.setdefault(name, []).append([(tuple(t.shape), _sample(t)) for t in tensors])
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


# A leaf module output whose largest value is under this is scaled back up while the check runs.
SMALL_SIGNAL = 2.0 ** -8


@contextmanager
def signal_kept_in_range(model: nn.Module, shifts: dict[str, list[int]]) -> Iterator[None]:
    """While the block runs, a leaf module whose output has faded below `SMALL_SIGNAL` has it multiplied by a
    power of two that brings its largest value into [0.5, 1).

    A model built without trained weights can shrink its signal layer after layer until it underflows
    (HF MobileViT: 1e-41 by its fourth stage), and there a wrong shrink changes nothing measurable. The
    powers are chosen on the first run (the masked reference) and recorded in `shifts` (module path ->
    one power per call); a second run (the shrunk model) replays them, so both compute the same function
    and must still agree. A power of two times a float is exact, and a zero stays zero, so the kept channels
    of a scaled output are the scaled kept channels.
    """
    replaying = bool(shifts)

    def make_hook(name: str):
        calls = iter(range(1 << 62))

        def scale(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.numel() == 0:
                return None
            call = next(calls)
            if replaying:
                recorded = shifts.get(name, [])
                power = recorded[call] if call < len(recorded) else 0
            else:
                largest = float(output.detach().abs().max())
                power = -math.floor(math.log2(largest)) - 1 if 0 < largest < SMALL_SIGNAL else 0
                power = min(power, int(math.log2(torch.finfo(output.dtype).max)) - 1)  # 2**power must not overflow
                shifts.setdefault(name, []).append(power)
            return output * (2.0 ** power) if power else None
        return scale

    leaves = [(name, module) for name, module in model.named_modules() if name and not any(module.children())]
    handles = [module.register_forward_hook(make_hook(name), prepend=True) for name, module in leaves]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def output_channel_dim(module: nn.Module) -> int:
    """The dim of a layer's output that holds its channels: 1 for convolutions and batch/instance/group norms
    (N, C, ...), a channel norm's own dim, the last dim otherwise (linear layers, LayerNorm, GPT-2's Conv1D)."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return 1
    dim = norm_channel_dim(module) if is_channel_norm(module) else None
    return -1 if dim is None else dim


def narrowed_outputs(tp_group, names: dict[nn.Module, str], out_channels,
                     found: NarrowedOutputs | None = None) -> NarrowedOutputs:
    """The module outputs a Torch-Pruning group narrows: every named layer whose output channels it prunes,
    added to `found` (several groups' in one dict) and returned.

    `out_channels(module)` is the layer's dense output width (Torch-Pruning's pruner of the module).
    """
    found = {} if found is None else found
    for dep, idxs in tp_group:
        module = dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue
        if getattr(dep.handler, "__name__", "") != "prune_out_channels":
            continue
        size = out_channels(module)
        if size is None:
            continue
        found.setdefault(names[module], (output_channel_dim(module), int(size), set()))[2].update(int(i) for i in idxs)
    return found


def worst_module_mismatch(reference: ModuleOutputs, got: ModuleOutputs,
                          tolerance: float = float("inf")) -> tuple[float, str | None, int]:
    """(largest relative error, first module in execution order over `tolerance` or None, tensors compared).

    Only tensors of the same shape in both runs are compared: a shrunk dimension changes the shape, and a
    module the shrink removed, or one called a different number of times, is not compared; nor is a tensor
    whose signal has vanished (`VANISHED`).
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
                if shape != got_shape or 0 < float(expected.abs().max()) < VANISHED:
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
