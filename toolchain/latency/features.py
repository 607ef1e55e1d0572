"""Per-layer descriptions of a model (op type, channels, kernel, stride, spatial size, groups, alignment),
taken from one forward pass with hooks on leaf modules; they feed `layerwise`, the lookup table and MACs.

Example:
    >>> layers = layer_specs(model, torch.randn(1, 3, 224, 224))
    >>> layers[0]
    LayerSpec(op='conv', in_channels=3, out_channels=64, kernel=7, stride=2, groups=1, in_h=224, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from toolchain.inputs import ModelInputs, call_model

# Leaf module class -> op kind. Anything else with parameters or work becomes "other".
_OP_OF_MODULE = {
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm1d: "norm",
    nn.BatchNorm2d: "norm",
    nn.LayerNorm: "norm",
    nn.GroupNorm: "norm",
    nn.ReLU: "act",
    nn.ReLU6: "act",
    nn.GELU: "act",
    nn.SiLU: "act",
    nn.Hardswish: "act",
    nn.Sigmoid: "act",
    nn.MaxPool2d: "pool",
    nn.AvgPool2d: "pool",
    nn.AdaptiveAvgPool2d: "pool",
    nn.ConvTranspose2d: "conv_transpose",
    nn.Upsample: "resize",
    nn.MultiheadAttention: "attention",
}
OP_KINDS = (
    "conv",
    "dwconv",
    "linear",
    "norm",
    "act",
    "pool",
    "conv_transpose",
    "resize",
    "attention",
    "other",
)
# Ops that dominate latency and get single-op measurements and lookup-table entries.
COMPUTE_OPS = ("conv", "dwconv", "linear", "conv_transpose")
ALIGNMENTS = (8, 16, 32)


@dataclass(frozen=True)
class LayerSpec:
    """The shape of one layer's work at batch 1 (in_h/in_w = spatial size or tokens x 1 for linear)."""

    op: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    batch: int = 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the layer (0 for element-wise ops)."""
        if self.op in ("conv", "dwconv", "conv_transpose"):
            per_output = self.in_channels // max(self.groups, 1) * self.kernel * self.kernel
            spatial = self.out_h * self.out_w if self.op != "conv_transpose" else self.in_h * self.in_w
            return self.batch * self.out_channels * spatial * per_output
        if self.op == "linear":
            return self.batch * self.in_h * self.in_w * self.in_channels * self.out_channels
        return 0

    @property
    def input_elements(self) -> int:
        return self.batch * self.in_channels * self.in_h * self.in_w

    @property
    def output_elements(self) -> int:
        return self.batch * self.out_channels * self.out_h * self.out_w

    def signature(self) -> tuple:
        """What a lookup table keys on besides the channels."""
        return (self.op, self.kernel, self.stride, self.groups == self.in_channels, self.in_h, self.in_w)

    def to_dict(self) -> dict:
        return asdict(self)


def _spatial(tensor: torch.Tensor) -> tuple[int, int, int]:
    """(channels, h, w) of an activation: NCHW, NCL, or tokens (N, T, C) for linear layers."""
    if tensor.dim() == 4:
        return tensor.shape[1], tensor.shape[2], tensor.shape[3]
    if tensor.dim() == 3:
        return tensor.shape[-1], tensor.shape[1], 1
    if tensor.dim() == 2:
        return tensor.shape[1], 1, 1
    return int(tensor.numel() // max(tensor.shape[0], 1)), 1, 1


def _spec(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> LayerSpec:
    op = next((kind for cls, kind in _OP_OF_MODULE.items() if type(module) is cls), "other")
    in_c, in_h, in_w = _spatial(inputs)
    out_c, out_h, out_w = _spatial(output)
    kernel, stride, groups = 1, 1, 1
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        kernel, stride, groups = module.kernel_size[0], module.stride[0], module.groups
        if isinstance(module, nn.Conv1d):
            in_c, in_h, in_w = inputs.shape[1], inputs.shape[2], 1
            out_c, out_h, out_w = output.shape[1], output.shape[2], 1
        if op == "conv" and groups > 1 and groups == in_c:
            op = "dwconv"
    if op == "linear" and inputs.dim() == 4:  # Linear applied on NCHW's last axis
        in_c, out_c = module.in_features, module.out_features
    return LayerSpec(
        op,
        int(in_c),
        int(out_c),
        int(kernel),
        int(stride),
        int(groups),
        int(in_h),
        int(in_w),
        int(out_h),
        int(out_w),
        int(inputs.shape[0]) if inputs.dim() > 0 else 1,
    )


def layer_specs(model: nn.Module, example_input: ModelInputs) -> list[LayerSpec]:
    """Leaf layers in execution order (a module called twice appears twice)."""
    specs: list[LayerSpec] = []

    def hook(module, args, output):
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            specs.append(_spec(module, args[0], output))
        elif isinstance(module, nn.MultiheadAttention) and isinstance(output, tuple):
            specs.append(_spec(module, args[0], output[0]))

    leaves = [m for m in model.modules() if not list(m.children()) or isinstance(m, nn.MultiheadAttention)]
    handles = [m.register_forward_hook(hook) for m in leaves if not isinstance(m, (nn.Identity, nn.Dropout))]
    try:
        with torch.no_grad():
            call_model(model.eval(), example_input)
    finally:
        for handle in handles:
            handle.remove()
    return specs


def total_macs(layers: list[LayerSpec]) -> int:
    return sum(layer.macs for layer in layers)


def spec_from_dict(values: dict) -> LayerSpec:
    return LayerSpec(**values)


def _log2(value: float) -> float:
    return float(np.log2(max(value, 1.0)))


FEATURE_NAMES = (
    *(f"op_{kind}" for kind in OP_KINDS),
    "log2_in_channels",
    "log2_out_channels",
    "kernel",
    "stride",
    "log2_in_hw",
    "log2_out_hw",
    "depthwise",
    *(f"in_aligned_{a}" for a in ALIGNMENTS),
    *(f"out_aligned_{a}" for a in ALIGNMENTS),
    "log2_macs",
    "log2_input_elements",
    "log2_output_elements",
    "log2_batch",
)


def layer_features(layer: LayerSpec) -> np.ndarray:
    """The feature vector of one layer, in FEATURE_NAMES order (log scales, alignment flags)."""
    one_hot = [float(layer.op == kind) for kind in OP_KINDS]
    values = [
        _log2(layer.in_channels),
        _log2(layer.out_channels),
        float(layer.kernel),
        float(layer.stride),
        _log2(layer.in_h * layer.in_w),
        _log2(layer.out_h * layer.out_w),
        float(layer.op == "dwconv"),
        *(float(layer.in_channels % a == 0) for a in ALIGNMENTS),
        *(float(layer.out_channels % a == 0) for a in ALIGNMENTS),
        _log2(layer.macs),
        _log2(layer.input_elements),
        _log2(layer.output_elements),
        _log2(layer.batch),
    ]
    return np.asarray(one_hot + values, dtype=np.float32)
