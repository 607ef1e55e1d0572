"""Which ONNX operators TensorRT's ONNX parser accepts, per release and data type, and the check against them.

Transcribed from the support matrix the parser documents (onnx/onnx-tensorrt `docs/operators.md`) at the
release tags `release/8.6-GA` (opset <= 17) and `10.1-GA` (opset 9-20); TensorRT 8.5 is 8.6 without the
six operators 8.6 added. A table lists each supported operator as `Op=TYPE/TYPE/...`.

Example:
    >>> table = get_op_table("10.3")
    >>> table.release, "LayerNormalization" in table.types, table.types["Conv"]
    ('10.x', True, frozenset({'FP32', 'FP16', 'BF16'}))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from toolchain.errors import ToolchainError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TENSORRT_VERSION = "10.3"  # what JetPack 6.1/6.2 ships on the Jetson Orin
_DEFAULT_DOMAINS = ("", "ai.onnx")
# ONNX TensorProto element types -> TensorRT type names used in the tables (DOUBLE is cast to FP32).
_FLOAT_TYPES = {1: "FP32", 10: "FP16", 16: "BF16", 11: "FP32"}

_TRT_8_6 = """
Abs=FP32/FP16/INT32 Acos=FP32/FP16 Acosh=FP32/FP16 Add=FP32/FP16/INT32 And=BOOL ArgMax=FP32/FP16/INT32
ArgMin=FP32/FP16/INT32 Asin=FP32/FP16 Asinh=FP32/FP16 Atan=FP32/FP16 Atanh=FP32/FP16
AveragePool=FP32/FP16/INT8/INT32 BatchNormalization=FP32/FP16 Cast=FP32/FP16/INT32/INT8/UINT8/BOOL
Ceil=FP32/FP16 Celu=FP32/FP16 Clip=FP32/FP16/INT8 Concat=FP32/FP16/INT32/INT8/BOOL
Constant=FP32/FP16/INT32/INT8/BOOL ConstantOfShape=FP32 Conv=FP32/FP16/INT8 ConvTranspose=FP32/FP16/INT8
Cos=FP32/FP16 Cosh=FP32/FP16 CumSum=FP32/FP16 DepthToSpace=FP32/FP16/INT32 DequantizeLinear=INT8
Div=FP32/FP16/INT32 Dropout=FP32/FP16 Einsum=FP32/FP16 Elu=FP32/FP16/INT8 Equal=FP32/FP16/INT32
Erf=FP32/FP16 Exp=FP32/FP16 Expand=FP32/FP16/INT32/BOOL EyeLike=FP32/FP16/INT32/BOOL
Flatten=FP32/FP16/INT32/BOOL Floor=FP32/FP16 Gather=FP32/FP16/INT8/INT32/BOOL
GatherElements=FP32/FP16/INT8/INT32/BOOL GatherND=FP32/FP16/INT8/INT32/BOOL Gemm=FP32/FP16/INT8
GlobalAveragePool=FP32/FP16/INT8 GlobalLpPool=FP32/FP16/INT8 GlobalMaxPool=FP32/FP16/INT8
Greater=FP32/FP16/INT32 GreaterOrEqual=FP32/FP16/INT32 GridSample=FP32/FP16 GroupNormalization=FP32/FP16
GRU=FP32/FP16 HardSwish=FP32/FP16/INT8 HardSigmoid=FP32/FP16/INT8 Identity=FP32/FP16/INT32/INT8/BOOL
If=FP32/FP16/INT32/BOOL ImageScaler=FP32/FP16 InstanceNormalization=FP32/FP16 IsInf=FP32/FP16
IsNaN=FP32/FP16/INT32 LayerNormalization=FP32/FP16 LeakyRelu=FP32/FP16/INT8 Less=FP32/FP16/INT32
LessOrEqual=FP32/FP16/INT32 Log=FP32/FP16 LogSoftmax=FP32/FP16 Loop=FP32/FP16/INT32/BOOL LRN=FP32/FP16
LSTM=FP32/FP16 LpNormalization=FP32/FP16 LpPool=FP32/FP16/INT8 MatMul=FP32/FP16 Max=FP32/FP16/INT32
MaxPool=FP32/FP16/INT8 Mean=FP32/FP16/INT32 MeanVarianceNormalization=FP32/FP16 Min=FP32/FP16/INT32
Mod=FP32/FP16/INT32 Mul=FP32/FP16/INT32 Neg=FP32/FP16/INT32 NonMaxSuppression=FP32/FP16
NonZero=FP32/FP16 Not=BOOL OneHot=FP32/FP16/INT32/BOOL Or=BOOL Pad=FP32/FP16/INT8/INT32
ParametricSoftplus=FP32/FP16/INT8 Pow=FP32/FP16 PRelu=FP32/FP16/INT8 QuantizeLinear=FP32/FP16
RandomNormal=FP32/FP16 RandomNormalLike=FP32/FP16 RandomUniform=FP32/FP16 RandomUniformLike=FP32/FP16
Range=FP32/FP16/INT32 Reciprocal=FP32/FP16 ReduceL1=FP32/FP16 ReduceL2=FP32/FP16 ReduceLogSum=FP32/FP16
ReduceLogSumExp=FP32/FP16 ReduceMax=FP32/FP16 ReduceMean=FP32/FP16 ReduceMin=FP32/FP16
ReduceProd=FP32/FP16 ReduceSum=FP32/FP16 ReduceSumSquare=FP32/FP16 Relu=FP32/FP16/INT8
Reshape=FP32/FP16/INT32/INT8/BOOL Resize=FP32/FP16 ReverseSequence=FP32/FP16/INT32/INT8/BOOL
RNN=FP32/FP16 RoiAlign=FP32/FP16 Round=FP32/FP16/INT8 ScaledTanh=FP32/FP16/INT8 Scan=FP32/FP16
Scatter=FP32/FP16/INT8/INT32 ScatterElements=FP32/FP16/INT8/INT32 ScatterND=FP32/FP16/INT8/INT32
Selu=FP32/FP16/INT8 Shape=FP32/FP16/INT32/INT8/BOOL Shrink=FP32/FP16/INT32 Sigmoid=FP32/FP16/INT8
Sign=FP32/FP16/INT8/INT32 Sin=FP32/FP16 Sinh=FP32/FP16 Size=FP32/FP16/INT32/INT8/BOOL
Slice=FP32/FP16/INT32/INT8/BOOL Softmax=FP32/FP16 Softplus=FP32/FP16/INT8 Softsign=FP32/FP16/INT8
SpaceToDepth=FP32/FP16/INT32 Split=FP32/FP16/INT32/BOOL Sqrt=FP32/FP16 Squeeze=FP32/FP16/INT32/INT8/BOOL
Sub=FP32/FP16/INT32 Sum=FP32/FP16/INT32 Tan=FP32/FP16 Tanh=FP32/FP16/INT8 ThresholdedRelu=FP32/FP16/INT8
Tile=FP32/FP16/INT32/BOOL TopK=FP32/FP16/INT32 Transpose=FP32/FP16/INT32/INT8/BOOL
Trilu=FP32/FP16/INT32/INT8/BOOL Unsqueeze=FP32/FP16/INT32/INT8/BOOL Upsample=FP32/FP16
Where=FP32/FP16/INT32/BOOL Xor=BOOL
"""

_TRT_10_1 = """
Abs=FP32/FP16/BF16/INT32/INT64 Acos=FP32/FP16/BF16 Acosh=FP32/FP16/BF16 Add=FP32/FP16/BF16/INT32/INT64
And=BOOL ArgMax=FP32/FP16/BF16/INT32/INT64 ArgMin=FP32/FP16/BF16/INT32/INT64 Asin=FP32/FP16/BF16
Asinh=FP32/FP16/BF16 Atan=FP32/FP16/BF16 Atanh=FP32/FP16/BF16 AveragePool=FP32/FP16/BF16
BatchNormalization=FP32/FP16/BF16 Cast=FP32/FP16/BF16/INT32/INT64/UINT8/BOOL
CastLike=FP32/FP16/BF16/INT32/INT64/UINT8/BOOL Ceil=FP32/FP16/BF16 Celu=FP32/FP16/BF16
Clip=FP32/FP16/BF16 Concat=FP32/FP16/BF16/INT32/INT64/BOOL Constant=FP32/FP16/BF16/INT32/INT64/BOOL
ConstantOfShape=FP32/FP16/BF16/INT32/INT64/BOOL Conv=FP32/FP16/BF16 ConvTranspose=FP32/FP16/BF16
Cos=FP32/FP16/BF16 Cosh=FP32/FP16/BF16 CumSum=FP32/FP16/BF16 DeformConv=FP32/FP16
DepthToSpace=FP32/FP16/BF16/INT32/INT64 DequantizeLinear=INT8/FP8/INT4 Div=FP32/FP16/BF16/INT32/INT64
Dropout=FP32/FP16/BF16 Einsum=FP32/FP16/BF16 Elu=FP32/FP16/BF16 Equal=FP32/FP16/BF16/INT32/INT64
Erf=FP32/FP16/BF16 Exp=FP32/FP16/BF16 Expand=FP32/FP16/BF16/INT32/INT64/BOOL
EyeLike=FP32/FP16/BF16/INT32/INT64/BOOL Flatten=FP32/FP16/BF16/INT32/INT64/BOOL Floor=FP32/FP16/BF16
Gather=FP32/FP16/BF16/INT32/INT64/BOOL GatherElements=FP32/FP16/BF16/INT32/INT64/BOOL
GatherND=FP32/FP16/BF16/INT32/INT64/BOOL Gelu=FP32/FP16/BF16/INT8/INT32/INT64 Gemm=FP32/FP16/BF16
GlobalAveragePool=FP32/FP16/BF16 GlobalLpPool=FP32/FP16/BF16 GlobalMaxPool=FP32/FP16/BF16
Greater=FP32/FP16/BF16/INT32/INT64 GreaterOrEqual=FP32/FP16/BF16/INT32/INT64 GridSample=FP32/FP16
GroupNormalization=FP32/FP16/BF16 GRU=FP32/FP16/BF16 HardSigmoid=FP32/FP16/BF16 HardSwish=FP32/FP16/BF16
Hardmax=FP32/FP16/BF16 Identity=FP32/FP16/BF16/INT32/INT64/BOOL If=FP32/FP16/BF16/INT32/INT64/BOOL
ImageScaler=FP32/FP16/BF16 InstanceNormalization=FP32/FP16/BF16 IsInf=FP32/FP16/BF16
IsNaN=FP32/FP16/BF16/INT32/INT64 LayerNormalization=FP32/FP16/BF16 LeakyRelu=FP32/FP16/BF16
Less=FP32/FP16/BF16/INT32/INT64 LessOrEqual=FP32/FP16/BF16/INT32/INT64 Log=FP32/FP16/BF16
LogSoftmax=FP32/FP16/BF16 Loop=FP32/FP16/BF16/INT32/INT64/BOOL LRN=FP32/FP16/BF16 LSTM=FP32/FP16/BF16
LpNormalization=FP32/FP16/BF16 LpPool=FP32/FP16/BF16 MatMul=FP32/FP16/BF16
Max=FP32/FP16/BF16/INT32/INT64 MaxPool=FP32/FP16/BF16 Mean=FP32/FP16/BF16/FP8/INT32/INT64
MeanVarianceNormalization=FP32/FP16/BF16 Min=FP32/FP16/BF16/INT32/INT64 Mish=FP32/FP16
Mod=FP32/FP16/BF16/INT32/INT64 Mul=FP32/FP16/BF16/INT32/INT64 Neg=FP32/FP16/BF16/INT32/INT64
NonMaxSuppression=FP32/FP16 NonZero=FP32/FP16 Not=BOOL OneHot=FP32/FP16/BF16/INT32/INT64/BOOL Or=BOOL
Pad=FP32/FP16/BF16/INT32/INT64 ParametricSoftplus=FP32/FP16/BF16 Pow=FP32/FP16/BF16 PRelu=FP32/FP16/BF16
QuantizeLinear=FP32/FP16/BF16 RandomNormal=FP32/FP16/BF16 RandomNormalLike=FP32/FP16/BF16
RandomUniform=FP32/FP16/BF16 RandomUniformLike=FP32/FP16/BF16 Range=FP32/FP16/BF16/INT32/INT64
Reciprocal=FP32/FP16/BF16 ReduceL1=FP32/FP16/BF16/INT32/INT64 ReduceL2=FP32/FP16/BF16/INT32/INT64
ReduceLogSum=FP32/FP16/BF16/INT32/INT64 ReduceLogSumExp=FP32/FP16/BF16/INT32/INT64
ReduceMax=FP32/FP16/BF16/INT32/INT64 ReduceMean=FP32/FP16/BF16/INT32/INT64
ReduceMin=FP32/FP16/BF16/INT32/INT64 ReduceProd=FP32/FP16/BF16/INT32/INT64
ReduceSum=FP32/FP16/BF16/INT32/INT64 ReduceSumSquare=FP32/FP16/BF16/INT32/INT64
Relu=FP32/FP16/BF16/INT32/INT64 Reshape=FP32/FP16/BF16/INT32/INT64/BOOL Resize=FP32/FP16/BF16
ReverseSequence=FP32/FP16/BF16/INT32/INT64/BOOL RNN=FP32/FP16/BF16 RoiAlign=FP32/FP16
Round=FP32/FP16/BF16 ScaledTanh=FP32/FP16/BF16 Scan=FP32/FP16/BF16 Scatter=FP32/FP16/BF16/INT32/INT64
ScatterElements=FP32/FP16/BF16/INT32/INT64 ScatterND=FP32/FP16/BF16/INT32/INT64 Selu=FP32/FP16/BF16
Shape=FP32/FP16/BF16/INT32/INT64/BOOL Shrink=FP32/FP16/BF16/INT32/INT64 Sigmoid=FP32/FP16/BF16
Sign=FP32/FP16/BF16/INT32/INT64 Sin=FP32/FP16/BF16 Sinh=FP32/FP16/BF16
Size=FP32/FP16/BF16/INT32/INT64/BOOL Slice=FP32/FP16/BF16/INT32/INT64/BOOL Softmax=FP32/FP16/BF16
Softplus=FP32/FP16/BF16 Softsign=FP32/FP16/BF16 SpaceToDepth=FP32/FP16/BF16/INT32/INT64
Split=FP32/FP16/BF16/INT32/INT64/BOOL Sqrt=FP32/FP16/BF16 Squeeze=FP32/FP16/BF16/INT32/INT64/BOOL
Sub=FP32/FP16/BF16/INT32/INT64 Sum=FP32/FP16/BF16/INT32/INT64 Tan=FP32/FP16/BF16 Tanh=FP32/FP16/BF16
ThresholdedRelu=FP32/FP16/BF16 Tile=FP32/FP16/BF16/INT32/INT64/BOOL TopK=FP32/FP16/BF16/INT32/INT64
Transpose=FP32/FP16/BF16/INT32/INT64/BOOL Trilu=FP32/FP16/BF16/INT32/INT64/BOOL
Unsqueeze=FP32/FP16/BF16/INT32/INT64/BOOL Upsample=FP32/FP16/BF16 Where=FP32/FP16/BF16/INT32/INT64/BOOL
Xor=BOOL
"""

# Supported in 8.6 but not yet in 8.5 (release/8.5-GA matrix).
_ADDED_IN_8_6 = ("GroupNormalization", "HardSwish", "IsInf", "LayerNormalization", "Mod", "OneHot")


@dataclass(frozen=True)
class OpTable:
    """Supported operators (name -> data types) and the opset range of one TensorRT release."""

    release: str
    min_opset: int
    max_opset: int
    types: MappingProxyType  # op type -> frozenset of TensorRT type names ("FP32", "FP16", "INT8", ...)
    source: str


def _parse(block: str, drop: tuple[str, ...] = ()) -> MappingProxyType:
    table = {}
    for item in block.split():
        op, types = item.split("=")
        if op not in drop:
            table[op] = frozenset(types.split("/"))
    return MappingProxyType(table)


# 8.x documents no lower opset bound (1 = none); 10.x documents opset 9 as the lowest.
_TABLES = {
    "8.5": OpTable("8.5", 1, 17, _parse(_TRT_8_6, drop=_ADDED_IN_8_6),
                   "onnx-tensorrt release/8.5-GA operators.md"),
    "8.6": OpTable("8.6", 1, 17, _parse(_TRT_8_6), "onnx-tensorrt release/8.6-GA operators.md"),
    "10.x": OpTable("10.x", 9, 20, _parse(_TRT_10_1), "onnx-tensorrt 10.1-GA operators.md"),
}


def get_op_table(tensorrt_version: str) -> OpTable:
    """The table for a TensorRT release such as "8.5.2", "8.6" or "10.3" (all 10.x share one table)."""
    parts = str(tensorrt_version).split(".")
    key = "10.x" if parts[0] == "10" else ".".join(parts[:2])
    if key not in _TABLES:
        raise ToolchainError(f"no operator table for TensorRT {tensorrt_version}; known: 8.5, 8.6, 10.x")
    return _TABLES[key]


@dataclass(frozen=True)
class UnsupportedOp:
    """A node TensorRT cannot build as asked. `blocking=False`: it builds, at a higher precision."""

    node: str
    op_type: str
    reason: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


def check_precision(precision: str) -> None:
    """ToolchainError unless `precision` is one TensorRT builds (fp32, fp16, int8)."""
    if precision not in PRECISIONS:
        raise ToolchainError(f"unknown TensorRT precision {precision!r}; valid: {', '.join(PRECISIONS)}")


def load_onnx(onnx_path: str | Path):
    """The ONNX model at `onnx_path`, or a ToolchainError naming why not."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ToolchainError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ToolchainError(f"cannot read ONNX file {path}: {type(exc).__name__}") from exc


def _walk_nodes(graph):
    """Every node, including those in If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _walk_nodes(sub)


def check_tensorrt_ops(onnx_path: str | Path, precision: str = "fp16",
                       tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> list[UnsupportedOp]:
    """Nodes the TensorRT release's ONNX parser rejects (blocking) or runs above `precision` (not blocking).

    Checks the default-domain opset against the release's range, custom domains (need a plugin),
    operators missing from the release's table, FP16/BF16 tensors an operator has no kernel for,
    MaxPool's Indices output, and (fp16/int8) float operators with no FP16 kernel.
    """
    import onnx

    check_precision(precision)
    table = get_op_table(tensorrt_version)
    model = load_onnx(onnx_path)
    found: list[UnsupportedOp] = []
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset is not None and not table.min_opset <= opset <= table.max_opset:
        reason = f"TensorRT {table.release} parses opset {table.min_opset}-{table.max_opset}"
        found.append(UnsupportedOp("(model)", f"opset {opset}", reason))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # types are only needed for the data-type check
        inferred = model
    graph = inferred.graph
    values = [*graph.value_info, *graph.input, *graph.output]
    elem_types = {v.name: v.type.tensor_type.elem_type for v in values}
    elem_types.update({t.name: t.data_type for t in graph.initializer})
    for index, node in enumerate(_walk_nodes(graph)):
        name = node.name or f"node{index}"
        if node.domain not in _DEFAULT_DOMAINS:
            found.append(UnsupportedOp(name, f"{node.domain}::{node.op_type}",
                                       "custom domain: TensorRT needs a plugin for it"))
            continue
        types = table.types.get(node.op_type)
        if types is None:
            reason = f"not supported by the ONNX parser of TensorRT {table.release}"
            found.append(UnsupportedOp(name, node.op_type, reason))
            continue
        data_type = _FLOAT_TYPES.get(elem_types.get(node.input[0], 0)) if node.input else None
        if data_type in ("FP16", "BF16") and data_type not in types:
            reason = f"no {data_type} support in TensorRT {table.release}"
            found.append(UnsupportedOp(name, node.op_type, reason))
        if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
            found.append(UnsupportedOp(name, node.op_type, "the Indices output is not supported"))
        if precision in ("fp16", "int8") and "FP32" in types and "FP16" not in types:
            found.append(UnsupportedOp(name, node.op_type, "no FP16 kernel: runs in FP32", blocking=False))
    return found
