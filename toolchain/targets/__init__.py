"""Targets: where a model runs and how it is compiled and timed.

A `Target` (toolchain/targets/target.py) is the value that says where and how latency is measured: device,
backend, threads, clock, statistic, runs. It resolves to a `Runtime`: a device class (`cpu`, `cuda`) with the
backend that compiles and times a model on it (`onnxruntime`, `tvm`, `torch`, `tensorrt`). Backends register
themselves with `@register_backend`; `get_target` is the one door to a runtime and `list_targets` the one
listing. Device facts (peak FLOP/s, bandwidth) live in the device table (devices.py), never here.

Example:
    >>> runtime = Target("cpu").resolve()                 # onnxruntime, 1 thread
    >>> runtime.label
    'cpu/onnxruntime/1t'
    >>> runner = runtime.prepare(model, example_input)    # doctest: +SKIP
    >>> runner.run()                                      # one synchronous inference  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from torch import nn

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs

# Device class -> default backend. A target name not in this table is unknown.
DEFAULT_BACKEND = {"cpu": "onnxruntime", "cuda": "torch"}


@dataclass(frozen=True)
class RpcEndpoint:
    """A TVM RPC tracker and the key of the devices to time on (e.g. a farm of Jetsons)."""

    tracker_host: str
    tracker_port: int
    key: str
    # TVM target of the remote device as JSON, e.g. '{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}';
    # empty = the host's `llvm` (loopback, same-ISA boards).
    tvm_target_json: str = ""


class Runner(Protocol):
    """A compiled model bound to one input, ready to time."""

    def run(self) -> None:
        """One synchronous inference (returns only after the device finished)."""

    def device_times_ms(self, repeats: int) -> list[float] | None:
        """Per-run times from the device's own timer (CUDA events, TVM evaluator); None = use a host clock."""


class Backend(Protocol):
    """What a backend module registers: availability, versions, and compile-for-timing."""

    def unavailable_reason(self, target: Runtime) -> str | None: ...

    def versions(self) -> dict[str, str]: ...

    def prepare(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> Runner: ...

    # Optional, for backends whose compiled form is plain bytes (ONNX Runtime): `compile` may then run in
    # another process and `load` bind its result here (a profiling campaign builds variants in parallel).
    # def compile(self, model, example_input, target) -> bytes
    # def load(self, compiled: bytes, example_input, target) -> Runner


@dataclass(frozen=True)
class Runtime:
    """A device class + backend + host threads (+ optional remote RPC endpoint), checked available: what
    compiles and times a model. Made by `get_target` (or `Target.resolve()`)."""

    name: str
    backend: str
    threads: int = defaults.THREADS
    rpc: RpcEndpoint | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """Short identity used in file names and the database, e.g. `cpu/onnxruntime/1t`."""
        return f"{self.name}/{self.backend}/{self.threads}t"

    def prepare(self, model: nn.Module, example_input: ModelInputs) -> Runner:
        """Compile `model` for this target and bind `example_input`; the returned runner only runs."""
        return _backend_impl(self).prepare(model, example_input, self)

    @property
    def compiles_to_bytes(self) -> bool:
        """Whether `compile` gives bytes that `load` can bind in another process (see Backend)."""
        return hasattr(_backend_impl(self), "compile") and self.rpc is None

    def compile(self, model: nn.Module, example_input: ModelInputs) -> bytes:
        """The compiled model as bytes (only where `compiles_to_bytes`); `load` turns it into a runner."""
        return _backend_impl(self).compile(model, example_input, self)

    def load(self, compiled: bytes, example_input: ModelInputs) -> Runner:
        """A runner for bytes from `compile` (which may have run in another process) bound to `example_input`."""
        return _backend_impl(self).load(compiled, example_input, self)

    def versions(self) -> dict[str, str]:
        """Library versions of the backend (they go into the measurement fingerprint)."""
        return _backend_impl(self).versions()


_BACKENDS: dict[tuple[str, str], Callable[[], Backend]] = {}


def register_backend(target: str, name: str) -> Callable:
    """Class decorator: register a backend class for `target` under `name`.

    >>> @register_backend("cpu", "mybackend")
    ... class MyBackend: ...
    """
    if target not in DEFAULT_BACKEND:
        raise ValueError(f"unknown target {target!r} for backend {name!r}")

    def decorate(cls):
        _BACKENDS[(target, name)] = cls
        return cls

    return decorate


def list_targets() -> dict[str, list[str]]:
    """Every target with its registered backends, default backend first."""
    result: dict[str, list[str]] = {}
    for target, default in DEFAULT_BACKEND.items():
        others = sorted(b for (t, b) in _BACKENDS if t == target and b != default)
        result[target] = [default, *others]
    return result


def _valid_choices() -> str:
    return "; ".join(f"{t}: {', '.join(bs)}" for t, bs in list_targets().items())


def get_target(
    name: str, backend: str | None = defaults.BACKEND, threads: int = defaults.THREADS, rpc: RpcEndpoint | None = None
) -> Runtime:
    """Look up a target; raises ToolchainError naming the valid choices, or why a backend is unavailable."""
    if name not in DEFAULT_BACKEND:
        raise ToolchainError(f"unknown target {name!r}; valid targets/backends: {_valid_choices()}")
    backend = backend or DEFAULT_BACKEND[name]
    if (name, backend) not in _BACKENDS:
        raise ToolchainError(
            f"unknown backend {backend!r} for target {name!r}; valid: {', '.join(list_targets()[name])}"
        )
    if threads < 1:
        raise ToolchainError(f"--threads must be >= 1, got {threads}")
    if rpc is not None and backend != "tvm":
        raise ToolchainError(f"remote devices are timed through TVM RPC; use --backend tvm, not {backend!r}")
    target = Runtime(name=name, backend=backend, threads=threads, rpc=rpc)
    reason = _backend_impl(target).unavailable_reason(target)
    if reason:
        raise ToolchainError(f"backend {backend!r} for target {name!r} is unavailable: {reason}")
    return target


def _backend_impl(target: Runtime) -> Backend:
    return _BACKENDS[(target.name, target.backend)]()


# Registration happens on import; every backend imports its runtime lazily, inside its methods.
from toolchain.targets.backends import onnxruntime_backend, tensorrt_backend, torch_backend, tvm_backend  # noqa: E402,F401,I001
# The measurement value and its lock, on top of the runtimes above.
from toolchain.targets.measurement import MEASUREMENT_LOCK, measurement_lock  # noqa: E402,I001
from toolchain.targets.target import AUTO_CLOCK, Target, resolve_clock, runs_on_timing_thread  # noqa: E402,I001

__all__ = ["AUTO_CLOCK", "DEFAULT_BACKEND", "MEASUREMENT_LOCK", "Backend", "RpcEndpoint", "Runner", "Runtime", "Target",
           "get_target", "list_targets", "measurement_lock", "register_backend", "resolve_clock",
           "runs_on_timing_thread"]
