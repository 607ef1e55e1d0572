"""TensorRT path: op check, INT8 calibration cache, on-device build script and runner, a local build.

A TensorRT engine is specific to the GPU and the TensorRT release it was built with, so the bundle
carries the ONNX plus `build_engine.sh` (trtexec) and `run.py` (TensorRT Python API, CUDA-event
timing) and the engine is built on the device. Where `tensorrt` imports and a GPU is present,
`build_and_time_engine` does the same here.

Example:
    >>> [str(p) for p in check_tensorrt_ops("model.onnx", "fp16", "10.3")]      # doctest: +SKIP
    ['/head/Unique (Unique): not supported by the ONNX parser of TensorRT 10.x']
    >>> write_calibration_cache("model.onnx", batches, "calib.cache")           # doctest: +SKIP
    >>> print(engine_build_script("int8", calib_cache_name="calib.cache"))      # doctest: +SKIP
"""

from __future__ import annotations

import json
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.tensorrt_ops import (
    DEFAULT_TENSORRT_VERSION,
    PRECISIONS,
    UnsupportedOp,
    check_precision,
    check_tensorrt_ops,
    load_onnx,
)

__all__ = [
    "DEFAULT_TENSORRT_VERSION", "PRECISIONS", "UnsupportedOp", "build_and_time_engine", "build_engine",
    "check_tensorrt_ops", "engine_build_script", "has_2_4_sparse_weights", "read_calibration_cache",
    "run_script", "tensorrt_unavailable_reason", "write_calibration_cache",
]
_HIST_BINS, _INT8_LEVELS = 2048, 128


# --- INT8 calibration cache ---------------------------------------------------------------------------

def trt_version_code(version: str) -> int:
    """TensorRT's integer release code: 8.6.1 -> 8601, 10.3.0 -> 100300 (NV_TENSORRT_VERSION)."""
    try:
        major, minor, patch = ([int(p) for p in str(version).split(".")[:3]] + [0, 0])[:3]
    except ValueError as exc:
        raise ToolchainError(f"bad TensorRT version {version!r}; expected e.g. 10.3.0") from exc
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def calibration_cache_header(version: str) -> str:
    # trtexec reads a cache through its entropy calibrator, which expects this algorithm name.
    return f"TRT-{trt_version_code(version)}-EntropyCalibration2"


def entropy_threshold(hist: np.ndarray, bin_width: float) -> float:
    """Clipping threshold of |x| that minimises KL(P || Q) between the histogram and its INT8 version.

    The entropy method of NVIDIA's "8-bit Inference with TensorRT" (2017): for each candidate
    cut i, P is the first i bins with the clipped tail folded into bin i-1, Q is those i bins
    merged into 128 levels and spread back over their non-empty bins.
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.sum() == 0:
        return len(hist) * bin_width
    best_kl, best_cut = np.inf, len(hist)
    for cut in range(_INT8_LEVELS, len(hist) + 1):
        kept = hist[:cut]
        reference = kept.copy()
        reference[-1] += hist[cut:].sum()
        starts = (np.arange(_INT8_LEVELS) * cut) // _INT8_LEVELS
        nonzero = kept > 0
        sums = np.add.reduceat(kept, starts)
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        groups = np.repeat(np.arange(_INT8_LEVELS), np.diff(np.append(starts, cut)))
        quantized = np.where(nonzero, (sums / np.maximum(counts, 1))[groups], 0.0)
        p = reference / reference.sum()
        q = quantized / max(quantized.sum(), 1e-300)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_cut = kl, cut
    return best_cut * bin_width


def _float_tensors(model) -> list:
    """Graph inputs and node outputs of float type: the tensors TensorRT wants scales for."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    initializers = {t.name for t in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    typed = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    names = [v.name for v in graph.input if v.name not in initializers]
    names += [o for n in graph.node for o in n.output if o and o not in constants]
    return [(name, typed[name]) for name in dict.fromkeys(names) if typed.get(name) in (1, 10, 16)]


def _activations(onnx_path: str | Path, batches: list) -> Iterable[dict[str, np.ndarray]]:
    import onnx
    import onnxruntime as ort

    model = load_onnx(onnx_path)
    tensors = _float_tensors(model)
    graph_outputs = {o.name for o in model.graph.output}
    for name, elem_type in tensors:
        if name not in graph_outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    wanted = [name for name, _ in tensors]
    for batch in batches:
        feed = dict(batch) if isinstance(batch, Mapping) else {input_names[0]: batch}
        missing = [n for n in input_names if n not in feed]
        if missing:
            raise ToolchainError(f"calibration batch lacks input(s) {missing}")
        inputs = {n: np.asarray(feed[n], dtype=np.float32) for n in input_names}
        yield dict(zip(wanted, session.run(wanted, inputs), strict=True))


def write_calibration_cache(onnx_path: str | Path, calib_batches: Iterable, out_path: str | Path,
                            tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> Path:
    """Per-tensor INT8 scales from calibration data, in TensorRT's calibration cache text format.

    Runs the ONNX in onnxruntime on every batch (an array for one-input models, else a name->array
    dict), histograms |x| of every float tensor, picks the entropy threshold and writes
    `TRT-<release>-EntropyCalibration2` then `<tensor>: <scale as big-endian float32 hex>`,
    scale = threshold / 127.
    """
    batches = list(calib_batches)
    if not batches:
        raise ToolchainError("calibration needs at least one batch")
    header = calibration_cache_header(tensorrt_version)
    amax: dict[str, float] = {}
    for outputs in _activations(onnx_path, batches):  # pass 1: range of each tensor
        for name, value in outputs.items():
            amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()) if value.size else 0.0)
    hists = {name: np.zeros(_HIST_BINS) for name in amax}
    for outputs in _activations(onnx_path, batches):  # pass 2: histograms over that range
        for name, value in outputs.items():
            if amax[name] > 0:
                hists[name] += np.histogram(np.abs(value), bins=_HIST_BINS, range=(0.0, amax[name]))[0]
    lines = [header]
    for name, top in amax.items():
        threshold = entropy_threshold(hists[name], top / _HIST_BINS) if top > 0 else 1e-8
        scale = max(threshold, 1e-8) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    return out_path


def read_calibration_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, tensor -> scale) of a TensorRT calibration cache."""
    header, *rows = Path(path).read_text().splitlines()
    scales = {}
    for row in rows:
        name, _, hex_scale = row.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hex_scale))[0]
    return header, scales


# --- 2:4 structured sparsity --------------------------------------------------------------------------

def has_2_4_sparse_weights(onnx_path: str | Path) -> bool:
    """True if some Conv/Gemm/MatMul weight has at most 2 non-zeros in every 4 along its input axis."""
    from onnx import numpy_helper

    model = load_onnx(onnx_path)
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        weight_name = node.input[1] if len(node.input) > 1 else ""
        if node.op_type not in ("Conv", "Gemm", "MatMul") or weight_name not in weights:
            continue
        w = numpy_helper.to_array(weights[weight_name])
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        axis = 1 if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else w.ndim - 2
        if w.ndim < 2 or w.shape[axis] < 4:
            continue
        moved = np.moveaxis(w, axis, -1)
        pad = (-moved.shape[-1]) % 4
        groups = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)]).reshape(-1, 4)
        if np.count_nonzero(groups, axis=1).max() <= 2 and np.count_nonzero(groups) > 0:
            return True
    return False


# --- on-device scripts --------------------------------------------------------------------------------

def engine_build_script(precision: str, onnx_name: str = "model.onnx", engine_name: str = "model.engine",
                        calib_cache_name: str | None = None, sparse_2_4: bool = False) -> str:
    """`build_engine.sh`: trtexec with the precision flags, the calibration cache and 2:4 sparsity."""
    check_precision(precision)
    if precision == "int8" and not calib_cache_name:
        raise ToolchainError("an int8 engine needs the calibration cache (write_calibration_cache)")
    flags = [f"--onnx={shlex.quote(onnx_name)}", f"--saveEngine={shlex.quote(engine_name)}"]
    if precision in ("fp16", "int8"):
        flags.append("--fp16")  # int8: layers without an INT8 kernel fall back to FP16, not FP32
    if precision == "int8":
        flags += ["--int8", f"--calib={shlex.quote(calib_cache_name)}"]
    if sparse_2_4:
        flags.append("--sparsity=enable")
    stamp = "" if precision != "int8" else f"""
# TensorRT ignores a cache whose header names another release; the scale lines are the same in all,
# so stamp the installed release into the header.
python3 - {shlex.quote(calib_cache_name)} <<'PY' || echo "note: no TensorRT version found; cache left as is"
import sys, tensorrt
major, minor, patch = ([int(p) for p in tensorrt.__version__.split(".")[:3]] + [0, 0])[:3]
code = major * (10000 if major >= 10 else 1000) + minor * 100 + patch
lines = open(sys.argv[1]).read().splitlines()
lines[0] = "TRT-%d-%s" % (code, lines[0].split("-", 2)[2])
open(sys.argv[1], "w").write("\\n".join(lines) + "\\n")
PY
"""
    return f"""#!/usr/bin/env bash
# Build the TensorRT engine on this device: an engine only runs on the GPU and TensorRT release
# that built it. Written by toolchain; precision {precision}{", 2:4 sparse weights" if sparse_2_4 else ""}.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "error: trtexec not found (JetPack installs it as /usr/src/tensorrt/bin/trtexec; or set TRTEXEC)" >&2
  exit 2
fi
{stamp}
"$TRTEXEC" {" ".join(flags)}
echo "built {engine_name}; time it with: python3 run.py --engine {engine_name}"
"""


# The board's `run.py` is a module of its own (linted and tested as code); bundles carry a copy of it.
BOARD_RUN_PY = Path(__file__).with_name("board_run.py")


def run_script() -> str:
    """`run.py` for the device: loads the engine with the TensorRT Python API, times it with CUDA events."""
    return BOARD_RUN_PY.read_text()


# --- local build, where TensorRT and a GPU exist ----------------------------------------------------------

def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot build and time engines here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"the tensorrt Python package does not import ({exc})"
    import ctypes

    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            cudart = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return "libcudart (CUDA runtime) not found"
    count = ctypes.c_int(0)
    if cudart.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA GPU found"
    return None


def _cache_calibrator(trt, cache_path: Path):
    """An entropy calibrator that only serves our cache (no batches: TensorRT reads the scales)."""
    import tensorrt

    _, scales = read_calibration_cache(cache_path)
    body = "\n".join(f"{n}: {struct.pack('>f', s).hex()}" for n, s in scales.items())
    cache = f"{calibration_cache_header(tensorrt.__version__)}\n{body}\n".encode()

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data):
            return None

    return CacheCalibrator()


def build_engine(onnx_path: str | Path, precision: str, engine_path: str | Path,
                 calib_cache: str | Path | None = None, sparse_2_4: bool = False,
                 workspace_mib: int = 1024) -> Path:
    """Build a serialized engine with the TensorRT Python API (the flags `build_engine.sh` gives trtexec)."""
    import tensorrt as trt

    check_precision(precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit_batch = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ToolchainError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calib_cache is None:
            raise ToolchainError("an int8 engine needs the calibration cache (write_calibration_cache)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _cache_calibrator(trt, Path(calib_cache))
    if sparse_2_4:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ToolchainError(f"TensorRT could not build a {precision} engine for {onnx_path} (see its log)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(plan))
    return engine_path


def build_and_time_engine(onnx_path: str | Path, precision: str, out_dir: str | Path,
                          calib_cache: str | Path | None = None, repeats: int = 200) -> dict:
    """Build the engine here and time it with the board's own `run.py` (same code a device user runs).

    Raises ToolchainError("TensorRT not available: <reason>") without TensorRT or a GPU.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ToolchainError(f"TensorRT not available: {reason}")
    import tensorrt as trt

    blocking = [p for p in check_tensorrt_ops(onnx_path, precision, trt.__version__) if p.blocking]
    if blocking:
        raise ToolchainError(f"TensorRT {trt.__version__} cannot build: {'; '.join(map(str, blocking))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(onnx_path, precision, out_dir / f"{Path(onnx_path).stem}.{precision}.engine",
                          calib_cache=calib_cache, sparse_2_4=has_2_4_sparse_weights(onnx_path))
    runner = out_dir / "run.py"
    shutil.copyfile(BOARD_RUN_PY, runner)
    result = subprocess.run([sys.executable, str(runner), "--engine", str(engine), "--repeats", str(repeats),
                             "--json"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip() or "no output").splitlines()[-1]
        raise ToolchainError(f"timing {engine.name} failed: {reason}")
    return json.loads(result.stdout.strip().splitlines()[-1])
