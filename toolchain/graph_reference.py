"""The reference a shrink is verified against: the dense model with the removed channels masked.

Removing a channel is the same as feeding zeros for it to every linear consumer (convolution,
linear layer, the output projection of attention heads), so the shrunk model must reproduce
the dense model with those inputs zeroed. A normalisation over the channel dimension (LayerNorm,
RMSNorm, single-group GroupNorm, ConvNeXt-V2's GlobalResponseNorm) is not linear: after the shrink it
normalises over the kept channels only, so in the reference it is computed over the kept channels too
(its other outputs are zero). A norm that cannot be computed that way (GroupNorm with several groups: removing
channels regroups the rest) is refused before anything is pruned.

>>> masks = ReferenceMasks()
>>> masks.zero_inputs(model.fc2, [3, 7])          # doctest: +SKIP
>>> masks.mask_group(dg, group, channel_norm_weights(model), names)   # doctest: +SKIP
>>> reference = masks.run(model, example_input)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch_pruning as tp
from torch import nn

from toolchain.inputs import ModelInputs, call_model, flatten_outputs


def _is_rms_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return "rmsnorm" in name and isinstance(getattr(module, "weight", None), nn.Parameter)


def _is_global_response_norm(module: nn.Module) -> bool:
    """timm's GlobalResponseNorm (ConvNeXt-V2): each channel's response divided by the mean over channels."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "GlobalResponseNorm" and isinstance(weight, nn.Parameter) and weight.dim() == 1
            and getattr(module, "channel_dim", None) in (1, -1))


def is_channel_norm(module: nn.Module) -> bool:
    """A normalisation whose statistics run over channels (so masking alone is no reference)."""
    return (isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or _is_rms_norm(module)
            or _is_global_response_norm(module))


def norm_channel_dim(module: nn.Module) -> int | None:
    """The dim of a norm's input that holds its channels, or None if it cannot be recomputed on a subset."""
    # timm LayerNorm2d / RmsNorm2d and transformers' ConvNextLayerNorm(data_format="channels_first"): NCHW input
    channels_first = type(module).__name__.endswith("2d") or getattr(module, "data_format", None) == "channels_first"
    if isinstance(module, nn.GroupNorm):
        return 1 if module.num_groups == 1 else None
    if isinstance(module, nn.LayerNorm):
        return (1 if channels_first else -1) if len(module.normalized_shape) == 1 else None
    if _is_rms_norm(module):
        return 1 if channels_first else -1
    if _is_global_response_norm(module):
        return module.channel_dim
    return None


def relative_error(expected: torch.Tensor, got: torch.Tensor) -> float:
    """max |got - expected| relative to the reference's largest magnitude (an all-zero reference: absolute);
    what a shrink's outputs are held to against the masked dense model.

    >>> relative_error(torch.tensor([2.0, -4.0]), torch.tensor([2.0, -3.0]))
    0.25
    """
    if expected.numel() == 0:
        return 0.0
    expected, got = expected.double(), got.double()
    return float((expected - got).abs().max()) / (float(expected.abs().max()) or 1.0)


def channel_norm_weights(model: nn.Module) -> dict[int, nn.Module]:
    """Norms over channels by the id of their weight: RMSNorm-style weights are traced as bare parameters."""
    return {id(m.weight): m for m in model.modules()
            if is_channel_norm(m) and isinstance(getattr(m, "weight", None), nn.Parameter)}


def norm_of(module, norm_weights: dict[int, nn.Module]) -> nn.Module | None:
    """The norm over channels that `module` is, or whose weight it is (an unwrapped parameter)."""
    if isinstance(module, nn.Module) and is_channel_norm(module):
        return module
    if isinstance(module, nn.Parameter):
        return norm_weights.get(id(module))
    return None


def unverifiable_norm_reason(module: nn.Module, path: str) -> str | None:
    """Why removing channels through this norm could not be verified (None if it can)."""
    if not is_channel_norm(module) or norm_channel_dim(module) is not None:
        return None
    if isinstance(module, nn.GroupNorm):
        return (f"GroupNorm at {path} ({module.num_groups} groups) would regroup the kept channels; "
                "it cannot be pruned by channels")
    return f"{type(module).__name__} at {path} normalises over several dims; its channels are not pruned"


class ReferenceMasks:
    """Per-layer inputs to zero and per-norm channels to leave out, applied while the reference runs."""

    def __init__(self):
        self._inputs: dict[nn.Module, tuple[set[int], int]] = {}
        self._norms: dict[nn.Module, set[int]] = {}

    def zero_inputs(self, layer: nn.Module, channels, dim: int = -1) -> None:
        entry = self._inputs.setdefault(layer, (set(), dim))
        entry[0].update(int(c) for c in channels)

    def drop_norm_channels(self, norm: nn.Module, channels) -> None:
        self._norms.setdefault(norm, set()).update(int(c) for c in channels)

    def mask_group(self, dg, group, norm_weights: dict[int, nn.Module], names: dict[nn.Module, str]) -> str | None:
        """Mask every channel a Torch-Pruning `group` removes, where it is consumed.

        Norms over channels (modules, or their weight traced as a bare parameter: `norm_weights`) drop the
        channels; layers of the model (`names`) whose dependency is their input-channel pruner see zeros there
        (dim 1 for convolutions, the last dim otherwise). Returns why the group cannot be masked (a norm that
        cannot be recomputed on a subset of its channels, `unverifiable_norm_reason`), else None.
        """
        for dep, dep_idxs in group:
            module = dep.target.module
            norm = norm_of(module, norm_weights)
            if norm is not None:
                reason = unverifiable_norm_reason(norm, names.get(norm, type(norm).__name__))
                if reason is not None:
                    return reason
                self.drop_norm_channels(norm, dep_idxs)
            elif not isinstance(module, nn.Parameter) and module in names:
                consumer = dg.get_pruner_of_module(module)
                if consumer is not None and dep.handler == consumer.prune_in_channels \
                        and dep.handler != consumer.prune_out_channels:
                    self.zero_inputs(module, dep_idxs, 1 if isinstance(module, nn.modules.conv._ConvNd) else -1)
        return None

    def run(self, model: nn.Module, example_input: ModelInputs) -> list[torch.Tensor]:
        """The dense model's flattened outputs with every mask applied."""
        with ExitStack() as stack:
            for layer, (channels, dim) in self._inputs.items():
                stack.enter_context(_zeroed_inputs(layer, sorted(channels), dim))
            for norm, channels in self._norms.items():
                stack.enter_context(_norm_over_kept(norm, sorted(channels)))
            with torch.no_grad():
                return flatten_outputs(call_model(model.eval(), example_input))


@contextmanager
def _zeroed_inputs(layer: nn.Module, channels: list[int], dim: int) -> Iterator[None]:
    index = torch.tensor(channels, dtype=torch.long)

    def hook(_module, inputs):
        x = inputs[0].clone()
        x.index_fill_(dim if dim >= 0 else x.dim() + dim, index, 0.0)
        return (x, *inputs[1:])

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _norm_over_kept(norm: nn.Module, dropped: list[int]) -> Iterator[None]:
    """Make `norm` normalise over its kept channels only (the dropped ones output zero)."""
    dim = norm_channel_dim(norm)
    width = norm.weight.shape[0]
    keep = torch.tensor([c for c in range(width) if c not in set(dropped)], dtype=torch.long)

    def hook(module, inputs, output):
        x = inputs[0]
        channel_dim = dim if dim >= 0 else x.dim() + dim
        with _sliced_parameters(module, keep):
            kept_output = module.forward(x.index_select(channel_dim, keep), *inputs[1:])
        result = torch.zeros_like(output)
        return result.index_copy_(channel_dim, keep, kept_output)

    handle = norm.register_forward_hook(hook, prepend=True)  # before any hook that records the output
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _sliced_parameters(norm: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Temporarily give a norm only the kept channels' weight/bias (and matching size attributes)."""
    saved_params = {k: v for k, v in norm._parameters.items() if v is not None}
    saved_attrs = {k: getattr(norm, k) for k in ("normalized_shape", "num_channels") if hasattr(norm, k)}
    try:
        for key, value in saved_params.items():
            norm._parameters[key] = nn.Parameter(value.detach().index_select(0, keep), requires_grad=False)
        if "normalized_shape" in saved_attrs:
            norm.normalized_shape = (len(keep),)
        if "num_channels" in saved_attrs:
            norm.num_channels = len(keep)
        yield
    finally:
        norm._parameters.update(saved_params)
        for key, value in saved_attrs.items():
            setattr(norm, key, value)


def regrouped_layer(dg, group) -> nn.Module | None:
    """A layer that receives only part of its channels from a group with no concatenation.

    Every layer of such a group carries all of the root's channels, one for one, unless a
    reshape in between folds several positions into channels (Swin's patch merging: C -> 4C);
    Torch-Pruning maps one channel where four are meant, and the pruned layer no longer fits.
    """
    if any(getattr(dep.target, "type", None) == tp.ops.OPTYPE.CONCAT for dep, _ in group):
        return None
    for dep, idxs in group:
        layer = dep.target.module
        if not isinstance(layer, nn.Module) or getattr(dep.target, "type", None) == tp.ops.OPTYPE.EMBED:
            continue
        pruner = dg.get_pruner_of_module(layer)
        if pruner is None:
            continue
        out_side = dg.is_out_channel_pruning_fn(dep.handler)
        channels = pruner.get_out_channels(layer) if out_side else pruner.get_in_channels(layer)
        if isinstance(channels, int) and len(idxs) < channels:
            return layer
    return None
