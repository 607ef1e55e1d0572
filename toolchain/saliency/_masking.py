"""Plumbing shared by the data-driven criteria: calibration batches, the loss they score against, and
channel masks that emulate removing channels without touching the model.

Removing channel c of a group is the same as feeding zeros for it to every linear consumer of the group
(the convolutions and linear layers that read it). `masked` registers forward pre-hooks on those
consumers that multiply their inputs by a keep-mask, so a criterion can ask "what is the loss with only
these channels kept" in one forward pass. A mask with one row per sample evaluates many coalitions at
once on a replicated batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph

Batch = tuple[torch.Tensor, torch.Tensor | None]
CALIBRATION_SAMPLE_SEED = 0


@dataclass(frozen=True)
class Consumer:
    """A layer reading a group's channels: `channels[i]` of its input carries root channel `roots[i]`."""

    module: nn.Module
    channels: torch.Tensor
    roots: torch.Tensor
    channel_dim: int  # 1 for convolutions, -1 for linear layers


def consumers(graph: PruningGraph, name: str) -> list[Consumer]:
    """The convolution/linear layers that read group `name`'s channels (not the group's own producers)."""
    group = graph.tp_group(name)
    found = []
    for i, (dep, idxs) in enumerate(group):
        module = dep.target.module
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            continue
        # Readers are pruned through prune_in_channels; a depthwise convolution's handler is its
        # prune_out_channels (in and out are one), so it counts as part of the group, not a reader.
        if getattr(dep.handler, "__name__", "") != "prune_in_channels":
            continue
        roots = [int(r) for r in group[i].root_idxs]
        found.append(Consumer(module, torch.tensor([int(c) for c in idxs]), torch.tensor(roots),
                              -1 if isinstance(module, nn.Linear) else 1))
    if not found:
        raise ToolchainError(f"group {name!r} has no convolution or linear consumer to score it by")
    return found


def root_width(graph: PruningGraph, name: str) -> int:
    """Number of root output channels of a group (the length of its score vector)."""
    return len(graph.tp_group(name)[0].idxs)


@contextmanager
def masked(graph: PruningGraph, keep: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run the block with each group's channels scaled by `keep[name]`: shape (channels,) or
    (batch rows, channels); 0 removes a channel, 1 keeps it.

    >>> with masked(graph, {"stem.0": torch.tensor([1.0, 0.0, 1.0])}):   # doctest: +SKIP
    ...     loss = model(x)
    """
    hooks = []

    def hook_for(consumer: Consumer, mask: torch.Tensor):
        def hook(_module, inputs):
            x = inputs[0]
            dim = consumer.channel_dim if consumer.channel_dim >= 0 else x.dim() - 1
            per_channel = mask[..., consumer.roots]  # (channels,) or (rows, channels)
            scale = torch.ones(*per_channel.shape[:-1], x.shape[dim], dtype=x.dtype)
            scale[..., consumer.channels] = per_channel.to(x.dtype)
            shape = [1] * x.dim()
            shape[dim] = x.shape[dim]
            if scale.dim() == 2:  # one mask per batch row
                shape[0] = x.shape[0]
                if scale.shape[0] != x.shape[0]:
                    raise ToolchainError(f"mask has {scale.shape[0]} rows for a batch of {x.shape[0]}")
            return (x * scale.reshape(shape), *inputs[1:])
        return hook

    for name, mask in keep.items():
        for consumer in consumers(graph, name):
            hooks.append(consumer.module.register_forward_pre_hook(hook_for(consumer, mask)))
    try:
        yield
    finally:
        for handle in hooks:
            handle.remove()


@contextmanager
def captured_inputs(modules: list[nn.Module]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the first input of each module (by position in `modules`) on every forward in the block."""
    store: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(modules))}
    hooks = [m.register_forward_pre_hook(lambda _m, inputs, i=i: store[i].append(inputs[0].detach()))
             for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for hook in hooks:
            hook.remove()


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's own statistics (running statistics left untouched).

    After pruning, BatchNorm is re-calibrated; evaluating a masked model with batch statistics is the cheap
    stand-in for that, so a probe measures the channels' worth rather than the statistics' shift.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (training, momentum) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum


@contextmanager
def per_coalition_statistics(model: nn.Module, rows: int) -> Iterator[None]:
    """BatchNorm layers normalise each block of `rows` consecutive rows with that block's own statistics.

    A replicated batch holds one coalition per block of rows; each is normalised as if BatchNorm had been
    re-calibrated on its images after pruning (as `batch_statistics` does for a single batch), without one
    coalition's statistics leaking into another's. Running statistics are neither used nor changed.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def forward_for(norm):
        def forward(x):
            blocks = x.reshape(-1, rows, *x.shape[1:])
            dims = [1, *range(3, blocks.dim())]
            mean = blocks.mean(dim=dims, keepdim=True)
            var = blocks.var(dim=dims, unbiased=False, keepdim=True)
            out = (blocks - mean) / torch.sqrt(var + norm.eps)
            if norm.affine:
                shape = [1, 1, -1] + [1] * (blocks.dim() - 3)
                out = out * norm.weight.view(shape) + norm.bias.view(shape)
            return out.reshape(x.shape)
        return forward

    saved = {norm: norm.__dict__.get("forward") for norm in norms}
    for norm in norms:
        norm.forward = forward_for(norm)
    try:
        yield
    finally:
        for norm, original in saved.items():
            if original is None:
                del norm.forward
            else:
                norm.forward = original


def calibration_batches(calib, batch_size: int, max_batches: int) -> list[Batch]:
    """Normalise what a caller passes as calibration data into a list of (inputs, labels or None)."""
    if calib is None:
        return []
    if isinstance(calib, torch.Tensor):
        return [(calib, None)]
    if isinstance(calib, tuple) and len(calib) == 2 and isinstance(calib[0], torch.Tensor):
        return [(calib[0], calib[1])]
    if isinstance(calib, Dataset):
        # A seeded sample, not the first images: splits are often stored sorted by class (MNIST-5k's are),
        # and the first batches would then hold one or two classes. The seed is fixed so that every
        # criterion and probe reads the same images.
        generator = torch.Generator().manual_seed(CALIBRATION_SAMPLE_SEED)
        chosen = torch.randperm(len(calib), generator=generator)[:batch_size * max_batches].tolist()
        return [(inputs, labels) for inputs, labels in DataLoader(Subset(calib, chosen), batch_size=batch_size)]
    if isinstance(calib, Sequence):
        return [b if isinstance(b, tuple) else (b, None) for b in calib][:max_batches]
    raise ToolchainError(f"calibration data must be a tensor, (inputs, labels), or a Dataset, not {type(calib)}")


def task_loss(outputs: torch.Tensor, labels: torch.Tensor | None, reference: torch.Tensor,
              reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against labels when given, else against the dense model's own predictions."""
    targets = labels if labels is not None else reference.argmax(dim=1)
    if outputs.dim() != 2:
        return ((outputs - reference) ** 2).flatten(1).mean(1).mean() if reduction == "mean" else \
            ((outputs - reference) ** 2).flatten(1).mean(1)
    return nn.functional.cross_entropy(outputs, targets, reduction=reduction)
