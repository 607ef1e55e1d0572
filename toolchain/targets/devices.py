"""The one device table: facts about each deployment device and the compiler settings it needs.

Peak figures are vendor datasheet numbers (dense, no 2:4 sparsity) and each entry names its source;
a figure the datasheet gives only "with sparsity" is halved, and one derived from core count and clock
says so. The `cpu` entry describes this host: it reads what the machine reports and leaves peak figures
as None rather than inventing them.

Example:
    >>> orin = get_device("jetson")                 # alias of "jetson-orin"
    >>> orin.cuda_sm, orin.peak_flops("fp16") / 1e12
    ('sm_87', 42.5)
    >>> orin.ridge_point_flop_per_byte("fp16")      # roofline knee: FLOP/s over bytes/s
    207.5...
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from toolchain.errors import ToolchainError

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

# CUDA limits shared by every architecture in the table (TVM needs them to schedule kernels).
_CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 48 * 1024,
                "thread_warp_size": 32}


@dataclass(frozen=True)
class DeviceProfile:
    """One deployment device: roofline facts, TVM targets, cross compiler, TensorRT availability.

    >>> d = get_device("h100")
    >>> d.tvm_device_target["arch"], d.memory_bandwidth_gb_per_s
    ('sm_90', 3350.0)
    """

    name: str
    description: str
    cpu_triple: str  # GNU triple of the host CPU, e.g. "aarch64-linux-gnu"
    cuda_sm: str | None  # CUDA architecture of the GPU ("sm_87"), None without one
    # Dense peak FLOP/s (OP/s for int8) per precision; None where no figure is known.
    peak_flops_per_s: Mapping[str, float | None] = field(compare=False)
    memory_bandwidth_gb_per_s: float | None
    tvm_host_target: Mapping = field(compare=False)  # TVM target dict for the CPU side
    tvm_device_target: Mapping | None = field(compare=False)  # TVM target dict for the GPU, None without one
    cross_compiler: str | None  # C++ compiler that links the TVM library; None = build host's own
    tensorrt_on_device: bool  # TensorRT ships with the device's software stack
    tensorrt_version: str | None  # the TensorRT release the device's stack ships (selects the op table)
    source: str  # where each figure comes from

    def __post_init__(self):
        # Read-only views: a frozen profile must not be mutable through its dicts.
        unknown = set(self.peak_flops_per_s) - set(PRECISIONS)
        if unknown:
            raise ValueError(f"{self.name}: unknown precision(s) {sorted(unknown)}; known: {PRECISIONS}")
        object.__setattr__(self, "peak_flops_per_s", MappingProxyType(dict(self.peak_flops_per_s)))
        object.__setattr__(self, "tvm_host_target", MappingProxyType(dict(self.tvm_host_target)))
        if self.tvm_device_target is not None:
            object.__setattr__(self, "tvm_device_target", MappingProxyType(dict(self.tvm_device_target)))

    @property
    def has_gpu(self) -> bool:
        return self.cuda_sm is not None

    def peak_flops(self, precision: str) -> float | None:
        """Dense peak FLOP/s at `precision`, None where the table has no figure."""
        if precision not in PRECISIONS:
            raise ToolchainError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        return self.peak_flops_per_s.get(precision)

    def ridge_point_flop_per_byte(self, precision: str) -> float | None:
        """Arithmetic intensity where the roofline turns from memory- to compute-bound."""
        peak = self.peak_flops(precision)
        if peak is None or not self.memory_bandwidth_gb_per_s:
            return None
        return peak / (self.memory_bandwidth_gb_per_s * 1e9)


def _jetson_orin() -> DeviceProfile:
    return DeviceProfile(
        name="jetson-orin",
        description="NVIDIA Jetson AGX Orin 64GB (12x Cortex-A78AE, 2048-core Ampere GPU, 64 Tensor Cores)",
        cpu_triple="aarch64-linux-gnu",
        cuda_sm="sm_87",
        peak_flops_per_s={"fp32": 5.3e12, "fp16": 42.5e12, "int8": 85.0e12},
        memory_bandwidth_gb_per_s=204.8,
        tvm_host_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"},
        tvm_device_target={"kind": "cuda", "arch": "sm_87", **_CUDA_LIMITS},
        cross_compiler="aarch64-linux-gnu-g++",
        tensorrt_on_device=True,
        tensorrt_version="10.3",
        source=(
            "NVIDIA Jetson AGX Orin Series Data Sheet (DS-10662-001) and Technical Brief (TB_10749-001): "
            "GPU 2048 CUDA cores + 64 Tensor Cores at 1.3 GHz, 170 sparse INT8 TOPS, LPDDR5 204.8 GB/s. "
            "fp32 = 2048 cores x 2 FLOP x 1.3 GHz; int8 dense = 170/2; fp16 Tensor Core dense = int8/2. "
            "TensorRT 10.3 is the release JetPack 6.1/6.2 ships."
        ),
    )


def _jetson_xavier() -> DeviceProfile:
    return DeviceProfile(
        name="jetson-xavier",
        description="NVIDIA Jetson AGX Xavier (8-core NVIDIA Carmel, 512-core Volta GPU, 64 Tensor Cores)",
        cpu_triple="aarch64-linux-gnu",
        cuda_sm="sm_72",
        peak_flops_per_s={"fp32": 1.41e12, "fp16": 11.0e12, "int8": 22.0e12},
        memory_bandwidth_gb_per_s=136.5,
        tvm_host_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "carmel"},
        tvm_device_target={"kind": "cuda", "arch": "sm_72", **_CUDA_LIMITS},
        cross_compiler="aarch64-linux-gnu-g++",
        tensorrt_on_device=True,
        tensorrt_version="8.5",
        source=(
            "NVIDIA Jetson AGX Xavier Series Data Sheet (DS-09654-001): 512-core Volta GPU at 1377 MHz, "
            "GPU 11 FP16 TFLOPS and 22 INT8 TOPS (Tensor Cores), LPDDR4x 136.5 GB/s. "
            "fp32 = 512 cores x 2 FLOP x 1.377 GHz. TensorRT 8.5 is the release JetPack 5.1 ships. "
            "sm_72 code needs CUDA <= 12.x (CUDA 13 dropped Volta)."
        ),
    )


def _h100() -> DeviceProfile:
    return DeviceProfile(
        name="h100",
        description="NVIDIA H100 SXM5 80GB (Hopper) in an x86-64 server",
        cpu_triple="x86_64-linux-gnu",
        cuda_sm="sm_90",
        peak_flops_per_s={
            "fp32": 67.0e12, "tf32": 494.5e12, "fp16": 989.5e12, "bf16": 989.5e12,
            "fp8": 1979.0e12, "int8": 1979.0e12,
        },
        memory_bandwidth_gb_per_s=3350.0,
        tvm_host_target={"kind": "llvm", "mtriple": "x86_64-linux-gnu"},
        tvm_device_target={"kind": "cuda", "arch": "sm_90", **_CUDA_LIMITS},
        cross_compiler=None,
        tensorrt_on_device=True,
        tensorrt_version="10.3",
        source=(
            "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: FP32 67 TFLOPS; TF32 989, FP16/BF16 1979, "
            "FP8 3958 TFLOPS and INT8 3958 TOPS with sparsity (dense = half); HBM3 3.35 TB/s. "
            "The PCIe card is slower (2.0 TB/s); TensorRT is whatever the server installs (10.x assumed)."
        ),
    )


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _host_cpu() -> DeviceProfile:
    cores = os.cpu_count() or 1
    machine = platform.machine() or "unknown"
    return DeviceProfile(
        name="cpu",
        description=f"this host: {_cpu_model_name()}, {cores} logical cores",
        cpu_triple=f"{machine}-linux-gnu" if platform.system() == "Linux" else machine,
        cuda_sm=None,
        peak_flops_per_s={},
        memory_bandwidth_gb_per_s=None,
        tvm_host_target={"kind": "llvm", "num-cores": cores},
        tvm_device_target=None,
        cross_compiler=None,
        tensorrt_on_device=False,
        tensorrt_version=None,
        source="read from this machine (/proc/cpuinfo, os.cpu_count); no datasheet, so no peak figures",
    )


# name -> factory (the host entry reads the machine when asked, not at import).
_DEVICES = {"cpu": _host_cpu, "jetson-orin": _jetson_orin, "jetson-xavier": _jetson_xavier, "h100": _h100}
ALIASES = MappingProxyType({"jetson": "jetson-orin"})


def list_devices() -> list[str]:
    """Canonical device names, sorted (aliases are in `ALIASES`)."""
    return sorted(_DEVICES)


def rpc_target_json(device: DeviceProfile | str) -> str:
    """The TVM target, as JSON, that a device's CPU is compiled for when it is timed through TVM RPC (the
    `RpcEndpoint.tvm_target_json` of a board); empty for this host, whose loopback compiles for its own `llvm`.

    >>> rpc_target_json("jetson")
    '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"}'
    >>> rpc_target_json("cpu")
    ''
    """
    profile = get_device(device) if isinstance(device, str) else device
    return "" if profile.name == "cpu" else json.dumps(dict(profile.tvm_host_target))


def get_device(name: str) -> DeviceProfile:
    """The profile for `name` (aliases resolved); ToolchainError lists the valid names."""
    canonical = ALIASES.get(name, name)
    if canonical not in _DEVICES:
        aliases = ", ".join(f"{a} -> {c}" for a, c in ALIASES.items())
        raise ToolchainError(
            f"unknown device {name!r}; valid: {', '.join(list_devices())} (aliases: {aliases})")
    return _DEVICES[canonical]()
