"""Per-channel scale modules and weight-standardized convolutions, made prunable.

Two structures Torch-Pruning cannot follow on its own:

* **Channel-scale modules** (timm's MetaFormer `Scale`: `x * self.scale.view(self.shape)`). The parameter is
  reshaped before use, so Torch-Pruning neither prunes it nor the `shape` the forward views it to; the pruned
  model then fails in that module. Registered as a customized layer whose input and output channels are the
  same channels, its parameter and `shape` are cut with them.
* **Weight-standardized convolutions** (timm's `StdConv2d`, `ScaledStdConv2d` and their `...Same` variants, in
  NFNets and BiT ResNets). Their forward standardizes each filter over its fan-in, so removing input channels
  changes every kept weight: no channel removal is exact. At inference the standardized weight is a constant,
  so each such conv is folded into a plain convolution holding it (same padding rule), which prunes exactly.
  The fold changes how the layer trains (no re-standardization in later fine-tuning), never what it computes.

>>> model = nn.Sequential(StdConv2d(3, 8, 3))                                    # doctest: +SKIP
>>> fold_weight_standardization(model)                                          # doctest: +SKIP
['0']
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional

try:  # timm is optional
    from timm.layers import Conv2dSame
    from timm.layers.std_conv import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
    from timm.models.metaformer import Scale as MetaFormerScale
except ImportError:
    Conv2dSame = ScaledStdConv2d = ScaledStdConv2dSame = StdConv2d = StdConv2dSame = MetaFormerScale = None

STANDARDIZED_CONVS = tuple(c for c in (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame) if c)


class ChannelScalePruner(tp.pruner.function.BasePruningFunc):
    """Cuts a per-channel scale module's parameters (their one non-singleton dim) and the `shape` it views them to."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        width = self.get_out_channels(layer)
        keep = sorted(set(range(width)) - {int(i) for i in idxs})
        for name, param in list(layer.named_parameters(recurse=False)):
            setattr(layer, name, self._prune_parameter_and_grad(param, keep, _channel_dim(param)))
        shape = getattr(layer, "shape", None)
        if isinstance(shape, tuple) and shape and shape[0] == width:
            layer.shape = (len(keep), *shape[1:])
        return layer

    prune_in_channels = prune_out_channels  # the same channels in and out: Torch-Pruning couples them

    def get_out_channels(self, layer: nn.Module) -> int:
        param = next(layer.parameters(recurse=False))
        return int(param.shape[_channel_dim(param)])

    get_in_channels = get_out_channels


def _channel_dim(param: torch.Tensor) -> int:
    dims = [i for i, size in enumerate(param.shape) if size > 1]
    return dims[0] if dims else 0


def folded_convs(pruned: nn.Module, dense: nn.Module) -> list[str]:
    """Names of the weight-standardized convs of `dense` that are plain convs in `pruned` (folded by pruning)."""
    if not STANDARDIZED_CONVS:
        return []
    pruned_modules = dict(pruned.named_modules())
    return [name for name, module in dense.named_modules() if isinstance(module, STANDARDIZED_CONVS)
            and name in pruned_modules and not isinstance(pruned_modules[name], STANDARDIZED_CONVS)]


def scale_pruners() -> dict:
    """Channel-scale module types with their surgery (for `build_dependency`'s customized pruners)."""
    return {MetaFormerScale: ChannelScalePruner()} if MetaFormerScale is not None else {}


def _standardized_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight the module's forward convolves with (timm's formula, evaluated once)."""
    flat = conv.weight.reshape(1, conv.out_channels, -1)
    if isinstance(conv, (ScaledStdConv2d, ScaledStdConv2dSame)):
        gain = (conv.gain * conv.scale).view(-1)
        weight = functional.batch_norm(flat, None, None, weight=gain, training=True, momentum=0.0, eps=conv.eps)
    else:
        weight = functional.batch_norm(flat, None, None, training=True, momentum=0.0, eps=conv.eps)
    return weight.reshape_as(conv.weight)


def fold_weight_standardization(model: nn.Module, only: Collection[str] | None = None) -> list[str]:
    """Replace every weight-standardized conv of `model` (in place) by a plain conv with the standardized weight.

    Returns the folded modules' names. Those whose forward pads dynamically ("same" padding) become timm's
    `Conv2dSame`, the others `nn.Conv2d` with their static padding. `only`: fold just these (a reload repeats
    the fold a pruned model went through before its weights are loaded).
    """
    folded = []
    for name, conv in list(model.named_modules()):
        wanted = only is None or name in only
        if not STANDARDIZED_CONVS or not isinstance(conv, STANDARDIZED_CONVS) or not wanted:
            continue
        dynamic_pad = bool(getattr(conv, "same_pad", False))
        plain_type = Conv2dSame if dynamic_pad else nn.Conv2d
        plain = plain_type(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                           padding=0 if dynamic_pad else conv.padding, dilation=conv.dilation, groups=conv.groups,
                           bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(_standardized_weight(conv))
            if conv.bias is not None:
                plain.bias.copy_(conv.bias)
        plain.train(conv.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
        folded.append(name)
    return folded
