"""Where a measurement ran: CPU model, threads, library versions, and on NVIDIA GPUs name, clocks,
temperature and power through NVML (`nvidia-ml-py`, optional and imported lazily).

`fingerprint_id` hashes only the facts that make timings comparable (hardware, threads, backend, versions),
not the temperature of the moment.

Example:
    >>> fp = machine_fingerprint(get_target("cpu"))
    >>> fp["cpu_model"], fingerprint_id(fp)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform

from toolchain.targets import Runtime

# Facts that change between runs on the same machine; left out of the identity hash.
VOLATILE_KEYS = ("gpu_clocks_mhz", "gpu_temperature_c", "gpu_power_w", "load_average")
# Which board of a device farm timed a row (the address its tracker handed out, e.g. "10.0.0.7:9091"). Recorded
# in every row, left out of the identity: boards of one kind share one identity, one database and one predictor.
DEVICE_KEY = "rpc_device"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvml_facts() -> dict:
    try:
        import pynvml  # from nvidia-ml-py, optional
    except ImportError:
        return {"gpu": "unknown (nvidia-ml-py not installed)"}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {
            "gpu": pynvml.nvmlDeviceGetName(handle),
            "gpu_driver": pynvml.nvmlSystemGetDriverVersion(),
            "gpu_clocks_mhz": {
                "sm": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "mem": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            },
            "gpu_temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "gpu_power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
        }
    except pynvml.NVMLError as error:
        return {"gpu": f"unknown (NVML error: {error})"}
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def machine_fingerprint(target: Runtime) -> dict:
    """Facts about the machine timing for `target` (for RPC: the host plus the remote key and TVM target)."""
    facts = {
        "target": target.name,
        "backend": target.backend,
        "threads": target.threads,
        "versions": target.versions(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    if target.rpc is not None:
        facts["device"] = f"rpc:{target.rpc.key}"
        facts["tvm_target"] = target.rpc.tvm_target_json or '{"kind": "llvm"}'
        return facts
    facts.update(cpu_model=_cpu_model(), cpu_count=os.cpu_count(), machine=platform.machine())
    facts["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if target.name == "cuda":
        facts.update(_nvml_facts())
    return facts


def fingerprint_id(fingerprint: dict) -> str:
    """Stable 16-hex-digit identity of a fingerprint (a machine, or a kind of board), ignoring volatile facts
    and which board of a farm it was."""
    stable = {k: v for k, v in fingerprint.items() if k not in VOLATILE_KEYS and k != DEVICE_KEY}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def device_of(fingerprint: dict) -> str:
    """The farm board that timed a row ("" where one machine or one board timed everything)."""
    return fingerprint.get(DEVICE_KEY, "")


def kind_fingerprint(fingerprint: dict) -> dict:
    """The fingerprint without the board: what a predictor for every board of a kind records."""
    return {key: value for key, value in fingerprint.items() if key != DEVICE_KEY}
