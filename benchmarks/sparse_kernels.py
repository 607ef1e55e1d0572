"""Micro-structured sparse kernels vs the best dense and sparse baselines.

For layer shapes from the zoo and large GEMMs, at several sparsities, times the sparse
module (the kernel plus its im2col, as a user runs it) against
- CPU: PyTorch dense (MKL / oneDNN) and onnxruntime dense on the same masked layer;
- GPU: PyTorch dense (cuBLAS / cuDNN) and, for 2:4, ``to_sparse_semi_structured``
  (cuSPARSELt), timed with CUDA events. Without a GPU these rows say "not measured".

Reported per row: median and spread (inter-quartile range) in ms, speedup over dense
PyTorch, the ideal speedup (1 / (1 - sparsity) for blocks and stripes, 2x for 2:4), the
share of it reached, and the effective TFLOP/s = dense FLOPs (2 * O * K * P) / time.

Usage: ``flock /tmp/toolchain-bench.lock python -m benchmarks.sparse_kernels`` (``make bench-kernels``);
``--quick`` runs two tiny shapes as a smoke test. Results go to
``benchmarks/results/kernels-<environment>.{json,csv,png}``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from toolchain.kernels.modules import SparseConv2d, SparseLinear
from toolchain.kernels.patterns import Pattern, project

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NO_GPU = "not measured: no GPU in this environment"


@dataclass(frozen=True)
class Layer:
    """One benchmarked layer: a conv (``kernel`` > 0) or a linear/GEMM (``kernel`` == 0)."""

    name: str
    source: str  # which zoo layer (or "large GEMM")
    in_features: int
    out_features: int
    kernel: int = 0
    spatial: int = 0  # input height = width for convs
    tokens: int = 0  # rows of a linear input
    stride: int = 1

    def module(self) -> nn.Module:
        if self.kernel:
            return nn.Conv2d(
                self.in_features,
                self.out_features,
                self.kernel,
                self.stride,
                padding=self.kernel // 2,
                bias=False,
            )
        return nn.Linear(self.in_features, self.out_features, bias=False)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        if self.kernel:
            return (batch, self.in_features, self.spatial, self.spatial)
        return (batch * self.tokens, self.in_features)

    def dense_flops(self, batch: int) -> float:
        if self.kernel:
            out = (self.spatial + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
            rows = batch * out * out
            return 2.0 * self.out_features * self.in_features * self.kernel**2 * rows
        return 2.0 * self.out_features * self.in_features * batch * self.tokens


# Shapes hard-coded from the zoo (the zoo lives in toolchain.models).
CPU_LAYERS = [
    Layer("r50.l3.conv1x1", "resnet50 layer3 conv 1x1 1024->256 at 14x14", 1024, 256, 1, 14),
    Layer("r50.l3.conv3x3", "resnet50 layer3 conv 3x3 256->256 at 14x14", 256, 256, 3, 14),
    Layer("r50.l4.conv3x3", "resnet50 layer4 conv 3x3 512->512 at 7x7", 512, 512, 3, 7),
    Layer("vgg.conv3x3", "vgg16_bn_cifar conv 3x3 256->256 at 8x8", 256, 256, 3, 8),
    Layer("r18.l2.conv3x3", "resnet18 layer2 conv 3x3 128->128 at 28x28", 128, 128, 3, 28),
    Layer("vit.fc1", "vit_tiny MLP fc1 192->768, 197 tokens", 192, 768, tokens=197),
    Layer("gemm.2048", "large GEMM 2048x2048, 256 rows", 2048, 2048, tokens=256),
]
GPU_LAYERS = CPU_LAYERS + [
    Layer("gemm.8192", "large GEMM 8192x8192, 8192 rows", 8192, 8192, tokens=8192),
    Layer("gemm.4096", "large GEMM 4096x4096, 4096 rows", 4096, 4096, tokens=4096),
]
QUICK_LAYERS = [
    Layer("tiny.conv3x3", "smoke test", 32, 48, 3, 9),
    Layer("tiny.linear", "smoke test", 96, 80, tokens=33),
]
# (pattern, sparsity): N:M fixes its own sparsity.
CPU_CASES = [
    ("2:4", 0.5),
    ("block4x4", 0.5),
    ("block4x4", 0.8),
    ("block4x4", 0.9),
    ("block16x16", 0.8),
    ("stripe", 0.8),
]
GPU_CASES = [
    ("2:4", 0.5),
    ("block16x16", 0.5),
    ("block16x16", 0.8),
    ("block16x16", 0.9),
    ("block32x32", 0.9),
    ("block64x64", 0.9),
    ("block4x4", 0.8),
]


@dataclass
class Row:
    layer: str
    source: str
    device: str
    dtype: str
    pattern: str
    sparsity: float
    backend: str
    median_ms: float | None
    spread_ms: float | None
    speedup_vs_dense: float | None
    ideal_speedup: float | None
    share_of_ideal: float | None
    effective_tflops: float | None
    note: str = ""


def ideal_speedup(pattern: str, sparsity: float) -> float:
    return 2.0 if Pattern.parse(pattern).kind == "nm" else 1.0 / (1.0 - sparsity)


def cpu_model_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if match:
            return match[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_fingerprint() -> dict:
    if not torch.cuda.is_available():
        return {"gpu": NO_GPU}
    info = {
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": list(torch.cuda.get_device_capability()),
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        info["sm_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
        info["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
        info["mem_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    except Exception as error:  # NVML is optional: say why the clocks are missing
        info["nvml"] = f"unavailable ({type(error).__name__})"
    return info


def fingerprint() -> dict:
    import numpy

    versions = {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}
    for name in ("triton", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "not installed"
    return {
        "cpu": cpu_model_name(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
        "versions": versions,
        **gpu_fingerprint(),
    }


def environment_name(info: dict) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    device = (
        "gpu-" + re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
        if torch.cuda.is_available()
        else f"cpu-{cpu}-{info['torch_threads']}t"
    )
    return f"{device}-torch{torch.__version__.split('+')[0]}"


def time_cpu_interleaved(fns: list, repeats: int, warmup: int = 3) -> list[tuple[float, float]]:
    """Median and inter-quartile range in ms of each ``fn()`` (wall clock), run round-robin
    so that every function sees the same machine load (the CPU is shared)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    results = []
    for times in samples:
        quartiles = statistics.quantiles(times, n=4)
        results.append((statistics.median(times), quartiles[2] - quartiles[0]))
    return results


def time_cuda(fn, repeats: int, warmup: int = 10) -> tuple[float, float]:
    """Median and inter-quartile range in ms of ``fn()`` with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    quartiles = statistics.quantiles(samples, n=4)
    return statistics.median(samples), quartiles[2] - quartiles[0]


def onnxruntime_session(layer: Layer, weight: torch.Tensor, threads: int):
    """A one-node ONNX model (Conv or MatMul) of the masked dense layer, run by onnxruntime."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    x_shape = [None] * 4 if layer.kernel else [None, layer.in_features]
    if layer.kernel:
        pad = layer.kernel // 2
        node = helper.make_node(
            "Conv",
            ["x", "w"],
            ["y"],
            kernel_shape=[layer.kernel] * 2,
            strides=[layer.stride] * 2,
            pads=[pad] * 4,
        )
        initializer = numpy_helper.from_array(weight.numpy(), "w")
    else:
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        initializer = numpy_helper.from_array(weight.t().contiguous().numpy(), "w")
    graph = helper.make_graph(
        [node],
        layer.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [initializer],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def sparse_module(layer: Layer, dense: nn.Module, pattern: str, backend: str = "auto") -> nn.Module:
    parsed = Pattern.parse(pattern)
    if layer.kernel:
        return SparseConv2d.from_dense(dense, parsed, backend)
    return SparseLinear.from_dense(dense, parsed, backend)


def _row(layer, device, dtype, pattern, sparsity, backend, timing, dense_ms, flops, note="") -> Row:
    median, spread = timing if timing else (None, None)
    ideal = ideal_speedup(pattern, sparsity) if pattern != "dense" else 1.0
    speedup = dense_ms / median if median and dense_ms else None

    def rounded(value: float | None, digits: int = 4) -> float | None:
        return None if value is None else float(f"{value:.{digits}g}")

    return Row(
        layer.name,
        layer.source,
        device,
        dtype,
        pattern,
        sparsity,
        backend,
        rounded(median),
        rounded(spread, 2),
        rounded(speedup, 3),
        rounded(ideal, 3),
        rounded(speedup / ideal if speedup else None, 3),
        rounded(flops / median / 1e9 if median else None, 3),
        note,
    )


def bench_cpu(layers: list[Layer], cases, batch: int, repeats: int) -> list[Row]:
    rows: list[Row] = []
    threads = torch.get_num_threads()
    for layer in layers:
        torch.manual_seed(0)
        dense = layer.module().eval()
        x = torch.randn(layer.input_shape(batch))
        flops = layer.dense_flops(batch)
        # (pattern, sparsity, backend, callable), timed together round-robin.
        candidates = [("dense", 0.0, "torch", partial(dense, x))]
        note = ""
        try:
            session = onnxruntime_session(layer, dense.weight.detach(), threads)
            candidates.append(("dense", 0.0, "onnxruntime", partial(session.run, None, {"x": x.numpy()})))
        except ImportError as error:
            note = f"not measured: {error}"
        with torch.no_grad():
            for pattern, sparsity in cases:
                if pattern == "stripe" and not layer.kernel:
                    continue
                masked = copy.deepcopy(dense)
                masked.weight.copy_(project(masked.weight, Pattern.parse(pattern), sparsity))
                sparse = sparse_module(layer, masked, pattern)
                torch.testing.assert_close(sparse(x), masked(x), rtol=1e-3, atol=1e-3)
                candidates.append((pattern, sparsity, "toolchain-cpp", partial(sparse, x)))
            timings = time_cpu_interleaved([fn for *_, fn in candidates], repeats)
        dense_ms = timings[0][0]
        for (pattern, sparsity, backend, _), timing in zip(candidates, timings, strict=True):
            rows.append(_row(layer, "cpu", "float32", pattern, sparsity, backend, timing, dense_ms, flops))
        if note:
            rows.append(
                _row(layer, "cpu", "float32", "dense", 0.0, "onnxruntime", None, dense_ms, flops, note)
            )
        print(f"  cpu {layer.name}: dense {dense_ms:.2f} ms", flush=True)
    return rows


def bench_gpu(layers: list[Layer], cases, batch: int, repeats: int, dtype=torch.float16) -> list[Row]:
    from torch.sparse import to_sparse_semi_structured

    rows: list[Row] = []
    dtype_name = str(dtype).removeprefix("torch.")
    for layer in layers:
        torch.manual_seed(0)
        dense = layer.module().to("cuda", dtype).eval()
        x = torch.randn(layer.input_shape(batch), device="cuda", dtype=dtype)
        flops = layer.dense_flops(batch)
        with torch.no_grad():
            dense_timing = time_cuda(partial(dense, x), repeats)
            dense_ms = dense_timing[0]
            rows.append(
                _row(
                    layer,
                    "cuda",
                    dtype_name,
                    "dense",
                    0.0,
                    "torch (cuBLAS/cuDNN)",
                    dense_timing,
                    dense_ms,
                    flops,
                )
            )
            for pattern, sparsity in cases:
                masked = copy.deepcopy(dense)
                masked.weight.copy_(project(masked.weight, Pattern.parse(pattern), sparsity))
                sparse = sparse_module(layer, masked, pattern)
                torch.testing.assert_close(sparse(x), masked(x), rtol=2e-2, atol=5e-2)
                timing = time_cuda(partial(sparse, x), repeats)
                rows.append(
                    _row(
                        layer,
                        "cuda",
                        dtype_name,
                        pattern,
                        sparsity,
                        "toolchain-triton",
                        timing,
                        dense_ms,
                        flops,
                    )
                )
                if pattern == "2:4" and not layer.kernel:
                    try:
                        anchor = copy.deepcopy(masked)
                        anchor.weight = nn.Parameter(
                            to_sparse_semi_structured(anchor.weight), requires_grad=False
                        )
                        anchor_timing, note = time_cuda(partial(anchor, x), repeats), ""
                    except (RuntimeError, ValueError) as error:
                        anchor_timing, note = None, f"unsupported: {str(error).splitlines()[0]}"
                    rows.append(_row(layer, "cuda", dtype_name, pattern, sparsity, "torch cuSPARSELt",
                                     anchor_timing, dense_ms, flops, note))
            print(f"  gpu {layer.name}: dense {dense_ms:.3f} ms", flush=True)
    return rows


def gpu_placeholder_rows(layers: list[Layer], cases) -> list[Row]:
    rows = []
    for layer in layers:
        for backend in ("torch (cuBLAS/cuDNN)", "toolchain-triton", "torch cuSPARSELt"):
            if backend.startswith("torch ("):
                patterns = [("dense", 0.0)]
            elif backend == "toolchain-triton":
                patterns = list(cases)
            else:  # the cuSPARSELt anchor is timed on linear layers only
                patterns = [case for case in cases if case[0] == "2:4" and not layer.kernel]
            for pattern, sparsity in patterns:
                rows.append(
                    _row(layer, "cuda", "float16", pattern, sparsity, backend, None, None, 0.0, NO_GPU)
                )
    return rows


def write_results(rows: list[Row], info: dict, command: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"kernels-{environment_name(info)}"
    payload = {"command": command, "fingerprint": info, "rows": [asdict(row) for row in rows]}
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    with Path(f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    plot(rows, info, Path(f"{stem}.png"))
    return stem


def plot(rows: list[Row], info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.pattern != "dense" and row.speedup_vs_dense is not None]
    if not measured:
        return
    layers = list(dict.fromkeys(row.layer for row in measured))
    cases = list(dict.fromkeys((row.pattern, row.sparsity, row.backend, row.device) for row in measured))
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(layers)), 4.5))
    width = 0.8 / len(cases)
    for index, case in enumerate(cases):
        values = [
            next(
                (
                    row.speedup_vs_dense
                    for row in measured
                    if (row.pattern, row.sparsity, row.backend, row.device) == case and row.layer == layer
                ),
                0.0,
            )
            for layer in layers
        ]
        label = (
            f"{case[0]} @ {case[1]:.0%} ({case[2]}, {case[3]}; ideal {ideal_speedup(case[0], case[1]):.1f}x)"
        )
        ax.bar([i + index * width for i in range(len(layers))], values, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))], layers, rotation=20, ha="right")
    ax.set_ylabel("speedup over dense PyTorch (x)")
    ax.set_title(f"{info['cpu']}, {info['torch_threads']} threads; GPU: {info['gpu']}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny shapes (smoke test)")
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per measurement")
    parser.add_argument("--batch", type=int, default=1, help="images (convs) or sequences (linears)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = fingerprint()
    print(json.dumps(info), flush=True)
    layers = QUICK_LAYERS if args.quick else CPU_LAYERS
    rows = bench_cpu(layers, CPU_CASES, args.batch, args.repeats)
    if torch.cuda.is_available():
        rows += bench_gpu(QUICK_LAYERS if args.quick else GPU_LAYERS, GPU_CASES, args.batch, args.repeats)
    else:
        rows += gpu_placeholder_rows(QUICK_LAYERS if args.quick else GPU_LAYERS, GPU_CASES)
    info["load_average_after_1_5_15"] = list(os.getloadavg())
    command = "python -m benchmarks.sparse_kernels " + " ".join(
        f"--{key.replace('_', '-')}" if value is True else f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if value not in (False, None) and key != "out_dir"
    )
    stem = write_results(rows, info, command, args.out_dir)
    print(f"wrote {stem}.json/.csv/.png")


if __name__ == "__main__":
    main()
