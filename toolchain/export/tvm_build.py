"""Cross-compile an ONNX model with TVM into one shared library for a device (run in a child process).

TVM (Relax) lowers the graph; the GPU kernels get dlight's default schedules (`tvm.s_tir.dlight`), TVM's
CUDA code generator writes them as CUDA C++, and the local `nvcc` compiles that into a fat binary with
SASS and PTX for the device's SM. The CPU side is LLVM code for the device's triple, and the cross
compiler (`aarch64-linux-gnu-g++` for a Jetson) links both into one `.so`.

Why a child process: TVM only embeds compiled kernels when its CUDA runtime module loads, and that
module links the driver library `libcuda.so.1`, which a build host without an NVIDIA driver lacks.
There the child loads a compile-only stand-in first: NVIDIA's own link stub (`lib64/stubs/libcuda.so`)
when the toolkit has it, else a generated one whose entry points all return CUDA_ERROR_NO_DEVICE.
No kernel runs at build time, so nothing calls them; the stand-in never leaves the child process.

    python -m toolchain.export.tvm_build '{"onnx_path": ..., "out_path": ..., "host_target": {...},
                                          "device_target": {...}, "cross_compiler": "aarch64-linux-gnu-g++"}'
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Driver entry points libtvm_runtime_cuda (apache-tvm 0.27) imports; read from the library when `nm` exists.
_DRIVER_SYMBOLS_FALLBACK = (
    "cuDeviceGetName", "cuFuncSetAttribute", "cuGetErrorName", "cuGetErrorString", "cuLaunchKernelEx",
    "cuModuleGetFunction", "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled",
)
_CUDA_ERROR_NO_DEVICE = 100


def find_nvcc() -> str | None:
    """Path of `nvcc`: PATH first, then $CUDA_HOME/bin, then /usr/local/cuda/bin."""
    candidates = [shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(str(Path(root) / "bin" / "nvcc"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def nvcc_supported_archs(nvcc: str) -> list[str]:
    """The `sm_XX` codes this nvcc can compile for (`nvcc --list-gpu-code`)."""
    result = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, check=False)
    return result.stdout.split() if result.returncode == 0 else []


def compile_cuda_fatbin(source: str, arch: str, nvcc: str) -> bytes:
    """CUDA C++ source -> fat binary with SASS for `arch` and PTX for forward compatibility."""
    compute = arch.replace("sm_", "compute_")
    with tempfile.TemporaryDirectory(prefix="toolchain-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        cmd = [nvcc, "--fatbin", "-O3", "-gencode", f"arch={compute},code={arch}",
               "-gencode", f"arch={compute},code={compute}", "-o", str(out), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed for {arch}: {result.stderr.strip()[-2000:]}")
        return out.read_bytes()


def _driver_symbols() -> list[str]:
    spec = importlib.util.find_spec("tvm")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libtvm_runtime_cuda.so"
    nm = shutil.which("nm")
    if nm and lib.is_file():
        result = subprocess.run([nm, "-D", "--undefined-only", str(lib)],
                                capture_output=True, text=True, check=False)
        names = [line.split()[-1] for line in result.stdout.splitlines() if line.split()]
        found = sorted({n.split("@")[0] for n in names if n.startswith("cu") and n[2:3].isupper()})
        if found:
            return found
    return list(_DRIVER_SYMBOLS_FALLBACK)


def _load_driver_or_stand_in(work_dir: Path) -> str:
    """Make `libcuda.so.1` resolvable before TVM loads; return which one was used."""
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        return "driver"
    except OSError:
        pass
    nvcc = find_nvcc()
    if nvcc:
        stub = Path(nvcc).resolve().parent.parent / "lib64" / "stubs" / "libcuda.so"
        if stub.is_file():
            ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
            return f"NVIDIA stub {stub}"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the compile-only libcuda stand-in; install gcc")
    source = work_dir / "libcuda_stand_in.c"
    body = "".join(f"int {name}(void) {{ return {_CUDA_ERROR_NO_DEVICE}; }}\n" for name in _driver_symbols())
    source.write_text("/* Compile-only stand-in for libcuda.so.1: every call reports no device. */\n" + body)
    library = work_dir / "libcuda.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(library), str(source)],
                   check=True, capture_output=True)
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return "compile-only stand-in"


def build_library(config: dict) -> dict:
    """Compile `config["onnx_path"]` for the targets in `config`; write `config["out_path"]`."""
    with tempfile.TemporaryDirectory(prefix="toolchain-tvm-") as tmp:
        device_target = config.get("device_target")
        driver = _load_driver_or_stand_in(Path(tmp)) if device_target else "none"

        import onnx
        import tvm
        import tvm_ffi
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
        from tvm.s_tir import dlight

        host = tvm.target.Target(config["host_target"])
        if device_target:
            if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
                raise RuntimeError("TVM's CUDA runtime module did not load, so kernels cannot be embedded")
            arch, nvcc = device_target["arch"], find_nvcc()

            @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
            def _compile(source, *_):  # called by TVM with the generated CUDA C++
                return bytearray(compile_cuda_fatbin(source, arch, nvcc))

            target = tvm.target.Target({**device_target, "host": config["host_target"]})
        else:
            target = host

        mod = from_onnx(onnx.load(config["onnx_path"]), shape_dict=config.get("input_shapes"),
                        keep_params_in_input=False)
        with target:
            if device_target:
                mod = relax.get_pipeline("zero")(mod)
                mod = dlight.ApplyDefaultSchedule(
                    dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
                    dlight.gpu.GeneralReduction(), dlight.gpu.Fallback(),
                )(mod)
            executable = tvm.compile(mod, target=target)
        cc = config.get("cross_compiler")
        executable.export_library(config["out_path"], **({"cc": cc} if cc else {}))
    return {"out_path": config["out_path"], "libcuda": driver, "tvm_version": tvm.__version__}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m toolchain.export.tvm_build '<json config>'", file=sys.stderr)
        return 2
    try:
        print(json.dumps(build_library(json.loads(argv[1]))))
    except Exception as exc:  # the parent turns this line into a ToolchainError
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
