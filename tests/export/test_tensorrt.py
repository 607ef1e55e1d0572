"""TensorRT path: the operator check, the calibration cache, the on-device scripts, the local build."""

import py_compile
import re
import shutil
import subprocess
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.export import tensorrt as trt_export
from toolchain.export.tensorrt import (
    check_tensorrt_ops,
    engine_build_script,
    has_2_4_sparse_weights,
    read_calibration_cache,
    run_script,
    write_calibration_cache,
)
from toolchain.export.tensorrt_ops import get_op_table


def hand_made(tmp_path, nodes, inputs, outputs, opset=17, name="hand.onnx"):
    graph = helper.make_graph(nodes, "hand_made", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def tensor(name, elem_type=TensorProto.FLOAT, shape=(1, 8)):
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def small_cnn(tmp_path, name="cnn.onnx"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(tmp_path / name), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["output"])
    return tmp_path / name


# --- operator check ---------------------------------------------------------------------------------

def test_unsupported_op_is_named_with_its_node(tmp_path):
    path = hand_made(tmp_path, [helper.make_node("Relu", ["x"], ["r"], name="stem_relu"),
                                helper.make_node("Unique", ["r"], ["y"], name="dedupe")],
                     [tensor("x")], [tensor("y", shape=(None,))])
    problems = check_tensorrt_ops(path, "fp16", "10.3")
    assert [(p.node, p.op_type, p.blocking) for p in problems] == [("dedupe", "Unique", True)]
    assert str(problems[0]) == "dedupe (Unique): not supported by the ONNX parser of TensorRT 10.x"


def test_a_zoo_like_cnn_passes_at_every_precision(tmp_path):
    path = small_cnn(tmp_path)
    for precision in ("fp32", "fp16", "int8"):
        for release in ("8.5", "8.6", "10.3"):
            assert check_tensorrt_ops(path, precision, release) == []


def test_opset_outside_the_release_range_is_flagged(tmp_path):
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    path = hand_made(tmp_path, [relu], [tensor("x")], [tensor("y")], opset=21)
    problems = check_tensorrt_ops(path, "fp32", "10.3")
    assert [(p.node, p.op_type) for p in problems] == [("(model)", "opset 21")]
    assert "parses opset 9-20" in problems[0].reason
    assert any(p.op_type == "opset 21" for p in check_tensorrt_ops(path, "fp32", "8.6"))


def test_release_differences_come_from_the_tables(tmp_path):
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="norm", axis=-1)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [8], [1.0] * 8)
    graph = helper.make_graph([node], "ln", [tensor("x")], [tensor("y")], [scale])
    path = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert [p.op_type for p in check_tensorrt_ops(path, "fp16", "8.5")] == ["LayerNormalization"]
    assert check_tensorrt_ops(path, "fp16", "8.6") == []
    assert "LayerNormalization" not in get_op_table("8.5.2").types


def test_custom_domain_bf16_and_maxpool_indices_are_flagged(tmp_path):
    nodes = [
        helper.make_node("FusedGelu", ["x"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MaxPool", ["img"], ["pooled", "indices"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Relu", ["half"], ["half_out"], name="bf16_relu"),
    ]
    inputs = [tensor("x"), tensor("img", shape=(1, 1, 4, 4)), tensor("half", TensorProto.BFLOAT16)]
    outputs = [tensor("g"), tensor("pooled", shape=(1, 1, 2, 2)),
               tensor("indices", TensorProto.INT64, (1, 1, 2, 2)), tensor("half_out", TensorProto.BFLOAT16)]
    graph = helper.make_graph(nodes, "mixed", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "mixed.onnx"
    onnx.save(model, str(path))
    found = {(p.node, p.reason) for p in check_tensorrt_ops(path, "fp16", "8.6")}
    assert ("gelu", "custom domain: TensorRT needs a plugin for it") in found
    assert ("pool", "the Indices output is not supported") in found
    assert ("bf16_relu", "no BF16 support in TensorRT 8.6") in found
    assert not any(p.node == "bf16_relu" for p in check_tensorrt_ops(path, "fp16", "10.3"))


def test_fp32_only_kernel_is_a_non_blocking_fallback(tmp_path):
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 8])
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], name="zeros")
    graph = helper.make_graph([node], "cos", [], [tensor("y")], [shape])
    path = tmp_path / "cos.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    fallback = check_tensorrt_ops(path, "fp16", "8.6")
    assert [(p.node, p.blocking) for p in fallback] == [("zeros", False)]
    assert check_tensorrt_ops(path, "fp32", "8.6") == []


def test_bad_arguments_are_clear_errors(tmp_path):
    path = small_cnn(tmp_path)
    with pytest.raises(ToolchainError, match="unknown TensorRT precision 'int4'"):
        check_tensorrt_ops(path, "int4")
    with pytest.raises(ToolchainError, match="no operator table for TensorRT 7.1"):
        check_tensorrt_ops(path, "fp16", "7.1")
    with pytest.raises(ToolchainError, match="ONNX file not found"):
        check_tensorrt_ops(tmp_path / "missing.onnx")


# --- calibration cache ----------------------------------------------------------------------------

def test_version_codes_follow_tensorrt():
    assert trt_export.trt_version_code("8.6.1") == 8601
    assert trt_export.trt_version_code("8.5.2.2") == 8502
    assert trt_export.trt_version_code("10.3.0") == 100300
    assert trt_export.trt_version_code("10.3") == 100300


def test_entropy_threshold_keeps_a_flat_histogram_whole():
    hist = np.full(2048, 10.0)
    assert trt_export.entropy_threshold(hist, bin_width=0.5) == 2048 * 0.5


def test_entropy_threshold_clips_rare_outliers():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.standard_normal(200_000), [60.0, -60.0]]))
    hist, _ = np.histogram(values, bins=2048, range=(0, 60.0))
    threshold = trt_export.entropy_threshold(hist, 60.0 / 2048)
    assert 2.0 < threshold < 10.0  # well inside the range, around the bulk of a unit Gaussian


def test_calibration_cache_has_tensorrts_format(tmp_path):
    path = small_cnn(tmp_path)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    cache = write_calibration_cache(path, batches, tmp_path / "calib.cache", tensorrt_version="8.6.1")
    lines = cache.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert all(re.fullmatch(r"\S+: [0-9a-f]{8}", line) for line in lines[1:])
    header, scales = read_calibration_cache(cache)
    assert header == lines[0]
    assert list(scales)[0] == "input" and list(scales)[-1] == "output"
    assert any("Conv" in name for name in scales) and any("Relu" in name for name in scales)
    assert all(np.isfinite(s) and s > 0 for s in scales.values())
    assert 0.5 / 127 < scales["input"] <= 1.0 / 127 * (1 + 1e-6)  # |input| <= 1 by construction


def test_calibration_needs_batches(tmp_path):
    with pytest.raises(ToolchainError, match="at least one batch"):
        write_calibration_cache(small_cnn(tmp_path), [], tmp_path / "c.cache")


# --- 2:4 sparsity, scripts ------------------------------------------------------------------------

def test_2_4_sparse_weights_are_detected(tmp_path):
    def linear_model(weight, name):
        w = helper.make_tensor("w", TensorProto.FLOAT, list(weight.shape), weight.flatten().tolist())
        node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
        graph = helper.make_graph([node], "fc", [tensor("x")], [tensor("y", shape=(1, 4))], [w])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
        return tmp_path / name

    dense = np.arange(1, 33, dtype=np.float32).reshape(4, 8)
    sparse = dense * np.tile([1, 0, 1, 0], 8).reshape(4, 8)
    assert has_2_4_sparse_weights(linear_model(sparse, "sparse.onnx"))
    assert not has_2_4_sparse_weights(linear_model(dense, "dense.onnx"))


@pytest.mark.parametrize("precision, present, absent", [
    ("fp32", [], ["--fp16", "--int8", "--calib"]),
    ("fp16", ["--fp16"], ["--int8", "--calib"]),
    ("int8", ["--int8", "--fp16", "--calib=calib.cache"], []),
])
def test_build_script_flags(precision, present, absent, tmp_path):
    script = engine_build_script(precision, calib_cache_name="calib.cache" if precision == "int8" else None)
    command = next(line for line in script.splitlines() if line.startswith('"$TRTEXEC"'))
    assert "--onnx=model.onnx" in command and "--saveEngine=model.engine" in command
    assert all(flag in command for flag in present) and not any(flag in command for flag in absent)
    assert "--sparsity=enable" not in command
    sparse = engine_build_script(precision, calib_cache_name="calib.cache", sparse_2_4=True)
    assert "--sparsity=enable" in sparse
    if shutil.which("bash"):
        (tmp_path / "build_engine.sh").write_text(script)
        subprocess.run(["bash", "-n", str(tmp_path / "build_engine.sh")], check=True)


def test_int8_script_needs_the_cache():
    with pytest.raises(ToolchainError, match="calibration cache"):
        engine_build_script("int8")


def test_run_script_compiles_and_times_with_cuda_events(tmp_path):
    source = run_script()
    (tmp_path / "run.py").write_text(source)
    py_compile.compile(str(tmp_path / "run.py"), doraise=True)
    for needle in ("deserialize_cuda_engine", "execute_async_v3", "cudaEventElapsedTime", "median_ms"):
        assert needle in source


# --- local build ------------------------------------------------------------------------------------

def test_local_build_says_why_tensorrt_is_unavailable(tmp_path):
    reason = trt_export.tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present; the real build test covers this machine")
    with pytest.raises(ToolchainError, match=r"^TensorRT not available: "):
        trt_export.build_and_time_engine(small_cnn(tmp_path), "fp16", tmp_path)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_local_build_times_an_engine(tmp_path):
    reason = trt_export.tensorrt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT not available: {reason}")
    result = trt_export.build_and_time_engine(small_cnn(tmp_path), "fp16", tmp_path, repeats=20)
    assert result["timer"] == "cuda-events" and len(result["measured_ms"]) == 20
