"""Torch-Pruning's result held to the toolchain's standard: the dense model with the removed channels masked.

The toolchain checks every shrink against the dense model in which each removed channel is zeroed where it is
consumed, and norms over channels normalise over the kept ones (`toolchain.graph_reference`). For a model
pruned by Torch-Pruning alone the same reference is built here: while its pruner runs, the root of every group
it removes is recorded (`record_root`: the root layer's path, output or input side, the root indices); the same
groups are derived again on an untouched dense copy, so every index is in dense coordinates (a group derived on
the half-pruned model maps a concatenation's offsets as they are after the earlier groups), and their channels
are masked exactly as the toolchain masks its own (`ReferenceMasks.mask_group`).

>>> dense = copy.deepcopy(model)                                          # doctest: +SKIP
>>> roots = prune_recording_roots(tp.pruner.MagnitudePruner(model, inputs, pruning_ratio=0.5))  # doctest: +SKIP
>>> reference, why_not = masked_reference(dense, inputs, roots)           # doctest: +SKIP
>>> max_relative_error(reference, run_outputs(model, inputs)) <= MASKED_MAX_REL_ERR   # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from toolchain.graph import EQUIVALENCE_TOLERANCE
from toolchain.graph_reference import ReferenceMasks, channel_norm_weights, relative_error
from toolchain.inputs import ModelInputs

# The toolchain's own tolerance for a shrink against its masked dense model (fp32 summation order only).
MASKED_MAX_REL_ERR = EQUIVALENCE_TOLERANCE


@dataclass(frozen=True)
class PrunedRoot:
    """The root of one pruned Torch-Pruning group: which channels of which layer it removed.

    >>> PrunedRoot("layer1.0.conv1", out_channels=True, idxs=(3, 7))
    PrunedRoot(module='layer1.0.conv1', out_channels=True, idxs=(3, 7))
    """

    module: str  # the root layer's dotted path in the model
    out_channels: bool  # its output channels were removed (else its input channels)
    idxs: tuple[int, ...]  # root channels removed, in dense coordinates


def record_root(dg: tp.DependencyGraph, group) -> PrunedRoot:
    """The root of a Torch-Pruning `group` of `dg`, to be recorded before `group.prune()`.

    Each layer's output channels belong to one group and are pruned once, so the root indices of a group
    are still the dense model's when it is pruned.
    """
    root = group[0]
    return PrunedRoot(dg._module2name[root.dep.target.module], dg.is_out_channel_pruning_fn(root.dep.handler),
                      tuple(int(i) for i in root.idxs))


def prune_recording_roots(pruner) -> list[PrunedRoot]:
    """One step of a Torch-Pruning pruner, as `pruner.step()` runs it, returning the root of each group pruned."""
    roots = []
    for group in pruner.step(interactive=True):
        roots.append(record_root(pruner.DG, group))
        group.prune()
    return roots


def masked_reference(dense: nn.Module, inputs: ModelInputs,
                     roots: list[PrunedRoot]) -> tuple[list[torch.Tensor] | None, str | None]:
    """The outputs of `dense` with every channel of the recorded groups masked, or (None, why not).

    `dense` is a copy of the model taken before pruning; it is traced again here (as Torch-Pruning's pruner
    traces: `build_dependency` with the same inputs) and left unchanged.
    """
    names = {module: name for name, module in dense.named_modules()}
    modules = dict(dense.named_modules())
    try:
        with torch.enable_grad(), contextlib.redirect_stdout(io.StringIO()):  # tracing needs autograd
            dg = tp.DependencyGraph().build_dependency(dense, example_inputs=inputs, verbose=False)
    except Exception as exc:
        return None, f"Torch-Pruning cannot trace the dense copy: {type(exc).__name__}: {exc}".splitlines()[0]
    masks = ReferenceMasks()
    norm_weights = channel_norm_weights(dense)
    for root in roots:
        module = modules.get(root.module)
        pruner = dg.get_pruner_of_module(module) if module is not None else None
        if pruner is None:
            return None, f"no prunable layer {root.module!r} in the dense copy"
        handler = pruner.prune_out_channels if root.out_channels else pruner.prune_in_channels
        group = dg.get_pruning_group(module, handler, list(root.idxs))
        reason = masks.mask_group(dg, group, norm_weights, names)
        if reason is not None:
            return None, reason
    return masks.run(dense, inputs), None


def max_relative_error(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    """Largest |output - reference| over all outputs, each relative to its reference's largest magnitude
    (an all-zero reference: absolute), as the toolchain's own shrink check measures it.

    >>> max_relative_error([torch.tensor([2.0, -4.0])], [torch.tensor([2.0, -3.0])])
    0.25
    """
    if len(reference) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs against a reference of {len(reference)}")
    return max((relative_error(expected, got) for expected, got in zip(reference, outputs)), default=0.0)
