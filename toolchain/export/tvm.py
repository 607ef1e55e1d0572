"""TVM (Relax) export: compile the ONNX for this host and prove it against PyTorch; cross-compile for devices.

Example:
    >>> lib = compile_onnx_for_host("model.onnx", "dist/cpu", threads=1)                  # doctest: +SKIP
    >>> verify_tvm_against(model, lib, torch.randn(1, 1, 28, 28))                         # doctest: +SKIP
    2.4e-07
    >>> so = cross_compile("model.onnx", get_device("jetson"), "dist/jetson")             # doctest: +SKIP
    >>> inspect_library(so)["elf_machine"], inspect_library(so)["cuda_sass_archs"]        # doctest: +SKIP
    ('aarch64', ['sm_87'])
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.onnx import MAX_REL_ERR_FP32, compare_with_pytorch
from toolchain.export.tvm_build import find_nvcc, nvcc_supported_archs
from toolchain.export.tvm_inspect import elf_machine, inspect_library
from toolchain.targets.devices import DeviceProfile

CROSS_BUILD_TIMEOUT_S = 900

__all__ = [
    "compile_onnx_for_host", "cross_compile", "inspect_library", "run_tvm_host",
    "time_tvm_host", "verify_tvm_against",
]


def _graph_inputs(onnx_path: Path) -> list[dict]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim]
        inputs.append({"name": value.name, "shape": dims})
    return inputs


def _check_onnx(onnx_path: str | Path) -> Path:
    path = Path(onnx_path)
    if not path.is_file():
        raise ToolchainError(f"ONNX file not found: {path}")
    return path


def _sidecar(lib_path: Path) -> Path:
    return lib_path.with_suffix(".json")


def compile_relax(onnx_model, target: Mapping, input_shapes: Mapping[str, Sequence[int]] | None = None):
    """An ONNX ModelProto -> TVM Relax executable for a target dict (apache-tvm 0.27 refuses strings)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shape_dict = {k: list(v) for k, v in input_shapes.items()} if input_shapes else None
    mod = from_onnx(onnx_model, shape_dict=shape_dict, keep_params_in_input=False)
    return tvm.compile(mod, target=tvm.target.Target(dict(target)))


def compile_onnx_for_host(onnx_path: str | Path, out_dir: str | Path, threads: int = 1,
                          input_shapes: Mapping[str, Sequence[int]] | None = None) -> Path:
    """Compile the ONNX for this machine (`llvm`) into `<out_dir>/<stem>.tvm-host.so`.

    A sidecar `<stem>.tvm-host.json` records the inputs and the thread count the runners use.
    `input_shapes` fixes symbolic dimensions, e.g. `{"input": (1, 3, 32, 32)}`.
    """
    import onnx
    import tvm

    path = _check_onnx(onnx_path)
    if threads < 1:
        raise ToolchainError(f"threads must be >= 1, got {threads}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = {"kind": "llvm", "num-cores": threads}
    try:
        executable = compile_relax(onnx.load(str(path)), target, input_shapes)
    except Exception as exc:
        raise ToolchainError(f"TVM could not compile {path.name}: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc
    lib_path = out_dir / f"{path.stem}.tvm-host.so"
    executable.export_library(str(lib_path))
    meta = {"onnx": str(path), "inputs": _graph_inputs(path), "threads": threads, "target": target,
            "tvm_version": tvm.__version__}
    _sidecar(lib_path).write_text(json.dumps(meta, indent=2))
    return lib_path


def _load_vm(lib_path: str | Path):
    """Relax VM on the CPU for a host library, with the thread pool sized as at compile time."""
    import tvm
    from tvm import relax

    lib_path = Path(lib_path)
    if not lib_path.is_file():
        raise ToolchainError(f"TVM library not found: {lib_path}")
    with open(lib_path, "rb") as library:
        header = library.read(64)
    if header[:4] != b"\x7fELF":
        raise ToolchainError(f"{lib_path} is not a shared library (no ELF header)")
    machine = elf_machine(header)
    host = {"AMD64": "x86_64", "arm64": "aarch64"}.get(_host_machine(), _host_machine())
    if machine != host:
        raise ToolchainError(f"{lib_path.name} is built for {machine}; this host is {host} (run it there)")
    meta = json.loads(_sidecar(lib_path).read_text()) if _sidecar(lib_path).is_file() else {}
    tvm.get_global_func("runtime.config_threadpool")(1, int(meta.get("threads", 1)))
    return relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu()), meta


def _host_machine() -> str:
    import platform

    return platform.machine()


def _as_input_list(inputs, meta: dict) -> list[np.ndarray]:
    if isinstance(inputs, np.ndarray):
        return [inputs]
    if isinstance(inputs, Mapping):
        names = [i["name"] for i in meta.get("inputs", [])] or list(inputs)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ToolchainError(f"missing TVM input(s) {missing}; the model takes {names}")
        return [np.asarray(inputs[n]) for n in names]
    return [np.asarray(x) for x in inputs]


def _run(vm, arrays: list[np.ndarray]) -> list[np.ndarray]:
    import tvm

    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays])
    outputs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)  # one output, or a tuple of them
    return [o.numpy() for o in outputs]


def run_tvm_host(lib_path: str | Path, inputs) -> np.ndarray | list[np.ndarray]:
    """Run a host library on `inputs` (one array, a list in graph order, or a name->array dict).

    Returns one array for a single-output model, else a list.
    """
    vm, meta = _load_vm(lib_path)
    outputs = _run(vm, _as_input_list(inputs, meta))
    return outputs[0] if len(outputs) == 1 else outputs


def verify_tvm_against(torch_model, lib_path: str | Path, example_input, n_random: int = 2,
                       tolerance: float = MAX_REL_ERR_FP32, seed: int = 0) -> float:
    """Run the TVM library and PyTorch on the example and `n_random` seeded random inputs.

    Returns the max relative error; raises ToolchainError above `tolerance` (1e-4 for fp32).
    """
    vm, _ = _load_vm(lib_path)
    return compare_with_pytorch(torch_model, lambda arrays: _run(vm, arrays), example_input, "TVM library",
                                n_random, tolerance, seed)


def time_tvm_host(lib_path: str | Path, input_shape: Sequence[int], repeats: int,
                  number: int = 1, seed: int = 0) -> list[float]:
    """Per-repeat latency in ms from TVM's own `time_evaluator` (each the mean of `number` runs)."""
    import tvm

    if repeats < 1 or number < 1:
        raise ToolchainError(f"repeats and number must be >= 1, got {repeats} and {number}")
    vm, _ = _load_vm(lib_path)
    x = np.random.default_rng(seed).standard_normal(tuple(input_shape), dtype=np.float32)
    _run(vm, [x])  # warm-up: first call allocates the memory plan
    timer = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeats)
    return [seconds * 1e3 for seconds in timer(tvm.runtime.tensor(x)).results]


def cross_compile(onnx_path: str | Path, device: DeviceProfile, out_dir: str | Path,
                  input_shapes: Mapping[str, Sequence[int]] | None = None) -> Path:
    """One shared library for `device`: CPU code for its triple + CUDA code for its SM, one link.

    Writes `<out_dir>/<stem>.<device>.so`, then checks it: ELF machine and embedded SASS must match `device`.
    """
    path = _check_onnx(onnx_path)
    if device.cross_compiler and shutil.which(device.cross_compiler) is None:
        raise ToolchainError(f"cross compiler {device.cross_compiler} not found; run `make cross-tools` "
                             f"(installs g++-aarch64-linux-gnu through apt)")
    if device.tvm_device_target is not None:
        nvcc = find_nvcc()
        if nvcc is None:
            raise ToolchainError("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin); "
                                 f"the CUDA toolkit is needed to build {device.cuda_sm} kernels")
        supported = nvcc_supported_archs(nvcc)
        if device.cuda_sm not in supported:
            raise ToolchainError(f"{nvcc} cannot compile for {device.cuda_sm} (it supports "
                                 f"{', '.join(supported)}); {device.name} needs an older CUDA toolkit")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lib_path = out_dir / f"{path.stem}.{device.name}.so"
    config = {
        "onnx_path": str(path.resolve()), "out_path": str(lib_path.resolve()),
        "host_target": dict(device.tvm_host_target),
        "device_target": dict(device.tvm_device_target) if device.tvm_device_target else None,
        "cross_compiler": device.cross_compiler,
        "input_shapes": {k: list(v) for k, v in input_shapes.items()} if input_shapes else None,
    }
    try:
        result = subprocess.run([sys.executable, "-m", "toolchain.export.tvm_build", json.dumps(config)],
                                capture_output=True, text=True, timeout=CROSS_BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(
            f"TVM cross build for {device.name} took over {CROSS_BUILD_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise ToolchainError(f"TVM cross build for {device.name} failed: {reason}")
    facts = inspect_library(lib_path)
    expected_machine = device.cpu_triple.split("-")[0]
    if facts["elf_machine"] != expected_machine:
        raise ToolchainError(f"{lib_path.name} is {facts['elf_machine']}, expected {expected_machine}")
    if device.cuda_sm and device.cuda_sm not in facts["cuda_sass_archs"]:
        raise ToolchainError(
            f"{lib_path.name} carries no {device.cuda_sm} machine code (found {facts['cuda_archs']})")
    return lib_path
