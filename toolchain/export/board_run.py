#!/usr/bin/env python3
"""Load a TensorRT engine, time it with CUDA events on the device and print the measured latency.

    python3 run.py [model.engine] [--warmup 20] [--repeats 200] [--json]

Copied into deploy bundles as `run.py` by toolchain. Needs the TensorRT Python bindings (JetPack ships them),
numpy and libcudart; it imports nothing from toolchain, so it runs on the board as a single file.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys

import numpy as np

COPY_HOST_TO_DEVICE = 1  # cudaMemcpyKind
CUDART_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
DEFAULT_ENGINE = "model.engine"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The engine as a positional argument or `--engine` (the bundle's README uses the first)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine_path", nargs="?", metavar="ENGINE", help=f"the engine file (default: {DEFAULT_ENGINE})")
    parser.add_argument("--engine", help="the engine file, as an option")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    parser.add_argument("--repeats", type=int, default=200, help="timed runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.engine_path and args.engine and args.engine_path != args.engine:
        parser.error(f"two engines given: {args.engine_path} and --engine {args.engine}")
    args.engine = args.engine or args.engine_path or DEFAULT_ENGINE
    if args.warmup < 0 or args.repeats < 1:
        parser.error("--warmup must be >= 0 and --repeats >= 1")
    return args


def summarize(engine: str, tensorrt_version: str, measured_ms: list[float]) -> dict:
    """The result printed with `--json`: the statistics of the timed runs and the runs themselves."""
    return {"engine": engine, "tensorrt": tensorrt_version, "timer": "cuda-events",
            "median_ms": statistics.median(measured_ms), "min_ms": min(measured_ms),
            "max_ms": max(measured_ms), "measured_ms": measured_ms}


def describe(result: dict) -> str:
    """The one line printed without `--json`."""
    return (f"{result['engine']}: median {result['median_ms']:.3f} ms over {len(result['measured_ms'])} runs (min "
            f"{result['min_ms']:.3f}, max {result['max_ms']:.3f}; TensorRT {result['tensorrt']}, CUDA events)")


class Cuda:
    """The few CUDA runtime calls timing needs, through ctypes (no extra Python package)."""

    def __init__(self):
        for name in CUDART_NAMES:
            try:
                self.lib = ctypes.CDLL(name)
                return
            except OSError:
                continue
        sys.exit("error: libcudart.so not found; is the CUDA runtime installed?")

    def call(self, what, *args):
        code = getattr(self.lib, what)(*args)
        if code != 0:
            sys.exit(f"error: {what} failed with CUDA error {code}")

    def handle(self, what):
        value = ctypes.c_void_p()
        self.call(what, ctypes.byref(value))
        return value

    def device_array(self, array):
        pointer = ctypes.c_void_p()
        self.call("cudaMalloc", ctypes.byref(pointer), ctypes.c_size_t(max(array.nbytes, 1)))
        host = array.ctypes.data_as(ctypes.c_void_p)
        self.call("cudaMemcpy", pointer, host, ctypes.c_size_t(array.nbytes), COPY_HOST_TO_DEVICE)
        return pointer

    def elapsed_ms(self, start, end):
        self.call("cudaEventSynchronize", end)
        ms = ctypes.c_float()
        self.call("cudaEventElapsedTime", ctypes.byref(ms), start, end)
        return ms.value


def bind_buffers(trt, engine, context, cuda: Cuda) -> list:
    """Random inputs and empty outputs on the device, bound to the context; returns them (keep them alive)."""
    rng, buffers = np.random.default_rng(0), []
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs + [n for n in names if n not in inputs]:  # inputs first: they fix dynamic output shapes
        shape = tuple(context.get_tensor_shape(name))
        if name in inputs and -1 in shape:  # dynamic: use the optimisation profile's preferred shape
            shape = tuple(engine.get_tensor_profile_shape(name, 0)[1])
            context.set_input_shape(name, shape)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        host = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
        pointer = cuda.device_array(host)
        buffers.append(pointer)
        context.set_tensor_address(name, pointer.value)
    return buffers


def time_engine(trt, engine_path: str, warmup: int, repeats: int) -> list[float]:
    """Per-run latencies in ms from CUDA events around each `execute_async_v3` on one stream."""
    logger = trt.Logger(trt.Logger.WARNING)
    with open(engine_path, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    if engine is None:
        sys.exit(f"error: cannot load {engine_path}; rebuild it on this device with ./build_engine.sh")
    context = engine.create_execution_context()
    cuda = Cuda()
    _buffers = bind_buffers(trt, engine, context, cuda)  # held until timing ends
    stream = cuda.handle("cudaStreamCreate")
    start, end = cuda.handle("cudaEventCreate"), cuda.handle("cudaEventCreate")
    for _ in range(warmup):
        context.execute_async_v3(stream.value)
    cuda.call("cudaStreamSynchronize", stream)
    measured_ms = []
    for _ in range(repeats):
        cuda.call("cudaEventRecord", start, stream)
        context.execute_async_v3(stream.value)
        cuda.call("cudaEventRecord", end, stream)
        measured_ms.append(cuda.elapsed_ms(start, end))
    return measured_ms


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import tensorrt as trt  # here, not at the top: the argument parsing and formatting work without it

    result = summarize(args.engine, trt.__version__, time_engine(trt, args.engine, args.warmup, args.repeats))
    print(json.dumps(result) if args.json else describe(result))


if __name__ == "__main__":
    main()
